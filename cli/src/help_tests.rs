//! Help texts speak to operators, and every command a runbook or an alert names exists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::{CommandFactory, Parser};

use crate::commands::Cli;

/// Every command path (`["tenants", "show"]`, …) and its rendered long help.
fn all_help(cmd: &mut clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    out.push((path.clone(), cmd.render_long_help().to_string()));
    for sub in cmd.get_subcommands_mut() {
        let mut p = path.clone();
        p.push(sub.get_name().to_owned());
        all_help(sub, p, out);
    }
}

#[test]
fn top_level_help_opens_with_what_the_tool_does_not_a_crate_description() {
    let help = Cli::command().render_long_help().to_string();
    let first = help.lines().next().unwrap();
    assert!(first.starts_with("Operate a wafleet fleet"), "{first}");
    assert!(!help.contains(env!("CARGO_PKG_DESCRIPTION")), "{help}");
}

#[test]
fn no_help_text_mentions_an_issue_number() {
    let mut helps = Vec::new();
    all_help(&mut Cli::command(), Vec::new(), &mut helps);
    assert!(helps.len() > 40, "walked {} commands", helps.len());
    for (path, help) in helps {
        let lower = help.to_lowercase();
        let numbered = help
            .char_indices()
            .any(|(i, c)| c == '#' && help[i + 1..].chars().next().is_some_and(|d| d.is_ascii_digit()));
        assert!(!numbered && !lower.contains("issue"), "help of {path:?} mentions an issue: {help}");
    }
}

/// The command words of every `` `wafleet …` `` span in `text`: the words after `wafleet` up to
/// the first argument (`<ref>`, `--flag`, `...`).
fn named_commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for span in text.split('`').skip(1).step_by(2) {
        let mut words = span.split_whitespace();
        if words.next() != Some("wafleet") {
            continue;
        }
        let path: Vec<String> = words
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
            .map(str::to_owned)
            .collect();
        out.push(path);
    }
    out
}

#[test]
fn every_command_named_in_the_runbooks_and_alerts_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut checked = 0;
    for file in ["docs/runbooks.md", "deploy/k8s/base/prometheusrule.yaml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for path in named_commands(&text) {
            let mut argv = vec!["wafleet".to_owned()];
            argv.extend(path.iter().cloned());
            argv.push("--help".into());
            let err = Cli::try_parse_from(&argv).expect_err("--help stops parsing");
            assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{file} names `{}`: {err}", path.join(" "));
            checked += 1;
        }
    }
    assert!(checked >= 15, "found only {checked} commands: is the extraction broken?");
}

#[test]
fn the_extraction_stops_at_the_first_argument() {
    let text = "run `wafleet dlq replay <ref> --all` or `wafleet tenants limits acme`, not `kubectl get`";
    assert_eq!(named_commands(text), [vec!["dlq", "replay"], vec!["tenants", "limits", "acme"]]);
    // And a command that does not exist is not mistaken for one.
    let err = Cli::try_parse_from(["wafleet", "tenants", "describe", "--help"]).unwrap_err();
    assert_ne!(err.kind(), clap::error::ErrorKind::DisplayHelp);
}
