//! The configuration reference (`docs/configuration.md`) documents every setting the code reads,
//! so the operator's guide cannot drift.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target") && !path.ends_with("tests") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The page that holds the settings tables, relative to the repository root.
const CONFIGURATION: &str = "docs/configuration.md";

#[test]
fn configuration_reference_documents_every_environment_variable_the_binaries_read() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join(CONFIGURATION)).unwrap();
    let mut files = Vec::new();
    for krate in ["shared", "ingest", "worker", "sim", "admin", "cli", "fleet"] {
        rust_files(&root.join(krate).join("src"), &mut files);
    }
    let external =
        ["AMQP_URL", "RABBITMQ_API_URL", "DATABASE_URL", "MIGRATE_DATABASE_URL", "WA_API_KEY", "WA_API_BASE_URL"];
    let mut missing = std::collections::BTreeSet::new();
    let mut found = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("\"WAFLEET_") {
            let name: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            found += 1;
            // Names that only unit tests use are not settings.
            if name.starts_with("WAFLEET_TEST_") {
                continue;
            }
            if !readme.contains(&format!("`{name}`")) {
                missing.insert(name);
            }
        }
        for name in external {
            if text.contains(&format!("\"{name}\"")) && !readme.contains(&format!("`{name}`")) {
                missing.insert(name.to_owned());
            }
        }
    }
    assert!(found > 10, "the scan found too few settings; did the layout change?");
    assert!(missing.is_empty(), "settings missing from {CONFIGURATION}: {missing:?}");
}

/// The settings tables of the configuration reference (its "Settings by binary" section), as the
/// set of variables each binary is documented to read: the per-binary tables, the "Used by"
/// column of the shared table, and the simulator's line.
fn documented_settings(readme: &str) -> std::collections::BTreeMap<&'static str, std::collections::BTreeSet<String>> {
    let mut by_binary: std::collections::BTreeMap<&'static str, std::collections::BTreeSet<String>> =
        Default::default();
    let config = readme
        .split("\n## Settings by binary")
        .nth(1)
        .unwrap_or_else(|| panic!("{CONFIGURATION} has no \"## Settings by binary\" section"))
        .split("\n## ")
        .next()
        .unwrap();
    for section in config.split("\n### ").skip(1) {
        let (title, body) = section.split_once('\n').unwrap();
        let binary = match title {
            t if t.starts_with("Shared") => None,
            t if t.contains("`wafleet-ingest`") => Some("wafleet-ingest"),
            t if t.contains("`wafleet-worker`") => Some("wafleet-worker"),
            t if t.contains("`wafleet-admin`") => Some("wafleet-admin"),
            t if t.contains("`wafleet-sim`") => {
                // Prose: every backticked variable name of the section.
                let names = body.split('`').skip(1).step_by(2).filter(|n| is_variable(n)).map(str::to_owned);
                by_binary.entry("wafleet-sim").or_default().extend(names);
                continue;
            }
            other => panic!("unknown settings section {other:?}"),
        };
        for row in body.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_owned();
            let users = match binary {
                Some(b) => vec![b],
                None => {
                    let used_by = cells[2];
                    let mut users = Vec::new();
                    for (word, binary) in [
                        ("ingest", "wafleet-ingest"),
                        ("worker", "wafleet-worker"),
                        ("admin API", "wafleet-admin"),
                        ("CLI", "wafleet"),
                        ("`wafleet ", "wafleet"),
                    ] {
                        if used_by.contains(word) && !users.contains(&binary) {
                            users.push(binary);
                        }
                    }
                    assert!(!users.is_empty(), "{name}: no binary in its Used by column {used_by:?}");
                    users
                }
            };
            for b in users {
                by_binary.entry(b).or_default().insert(name.clone());
            }
        }
    }
    by_binary
}

fn is_variable(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The variables `--help` lists (`[env: NAME=…]` or `[env: NAME]`).
fn variables_in_help(help: &str) -> std::collections::BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| *c != '=' && *c != ']').collect::<String>())
        .collect()
}

#[test]
fn every_binary_help_lists_exactly_the_settings_the_configuration_reference_documents_for_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join(CONFIGURATION)).unwrap();
    let documented = documented_settings(&readme);
    let dir = wafleet_tests::wafleet_cli_path().parent().unwrap().to_path_buf();
    for binary in ["wafleet-ingest", "wafleet-worker", "wafleet-admin", "wafleet", "wafleet-sim"] {
        let path = dir.join(binary);
        assert!(path.exists(), "{} missing: run `cargo build --workspace` first", path.display());
        // No setting at all: --help must not need one (WA_API_KEY and the signing key included).
        let output = std::process::Command::new(&path).arg("--help").env_clear().output().unwrap();
        assert!(output.status.success(), "{binary} --help failed: {}", String::from_utf8_lossy(&output.stderr));
        let listed = variables_in_help(&String::from_utf8_lossy(&output.stdout));
        let expected = documented.get(binary).cloned().unwrap_or_default();
        let undocumented: Vec<_> = listed.difference(&expected).collect();
        let not_read: Vec<_> = expected.difference(&listed).collect();
        assert!(
            undocumented.is_empty() && not_read.is_empty(),
            "{binary}: read but not in {CONFIGURATION} {undocumented:?}; in {CONFIGURATION} but not read {not_read:?}"
        );
    }
}
