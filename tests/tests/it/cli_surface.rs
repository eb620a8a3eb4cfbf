//! The operator's side of `wafleet`, run as a real process: irreversible commands refuse to run
//! unconfirmed in a script, partial limit updates, `tenants show`, `rules list|remove`, `depth`
//! of named tenants, and clean stderr on success.

use std::process::Output;

use wafleet_tests::{EnvOptions, TestEnv};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A successful run that says nothing alarming: exit 0, and no `ERROR`/`WARN` log line (an
/// operator at 3 a.m. reads those as "it failed").
fn assert_clean(out: &Output, what: &str) {
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{what} failed: {stderr}");
    assert!(!stderr.contains("ERROR") && !stderr.contains("WARN"), "{what} logged an error or warning: {stderr}");
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_touch_the_broker_end_without_error_or_warning_lines() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    assert_clean(&env.wafleet(&["tenants", "add", "clean_a", "--bridge", "clean_a"]), "tenants add");
    assert_clean(&env.wafleet(&["dlq", "list"]), "dlq list");
    assert_clean(&env.wafleet(&["dlq", "show", "clean_a"]), "dlq show");
    assert_clean(&env.wafleet(&["dlq", "purge", "clean_a", "--yes"]), "dlq purge");
    assert_clean(&env.wafleet(&["depth", "clean_a"]), "depth");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboard_and_erase_refuse_without_yes_when_stdin_is_not_a_terminal() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    assert_clean(&env.wafleet(&["tenants", "add", "keep_me", "--bridge", "keep_me"]), "tenants add");
    // `Command::output` gives the child no stdin, so there is no terminal to confirm on.
    for args in
        [&["tenants", "offboard", "keep_me"][..], &["tenants", "erase", "keep_me", "--contact", "+15550001111"][..]]
    {
        let out = env.wafleet(args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran unconfirmed");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("--yes"), "{stderr}");
    }
    let show = env.wafleet(&["tenants", "show", "keep_me", "--json"]);
    assert_clean(&show, "tenants show");
    assert_eq!(json_of(&show)["status"], "active", "the refused offboard changed nothing");
    // Nothing was recorded as done either.
    let audit = json_of(&env.wafleet(&["audit", "--json"]));
    assert!(
        audit.as_array().unwrap().iter().all(|r| r["command"] != "tenants offboard" && r["command"] != "tenants erase"),
        "{audit}"
    );
    // A dry run changes nothing, so it needs no confirmation.
    assert_clean(&env.wafleet(&["tenants", "offboard", "keep_me", "--dry-run"]), "offboard --dry-run");
    assert_clean(&env.wafleet(&["tenants", "erase", "keep_me", "--contact", "+15550001111", "--yes"]), "erase");
    assert_clean(&env.wafleet(&["tenants", "offboard", "keep_me", "--yes"]), "offboard --yes");
    let show = json_of(&env.wafleet(&["tenants", "show", "keep_me", "--json"]));
    assert_eq!(show["status"], "offboarded");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_limits_update_leaves_the_other_limits_as_they_were() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    assert_clean(&env.wafleet(&["tenants", "add", "lim_t", "--bridge", "lim_t"]), "tenants add");
    let limits = |env: &TestEnv| json_of(&env.wafleet(&["tenants", "show", "lim_t", "--json"]))["limits"].clone();
    assert_eq!(limits(&env), serde_json::json!({"weight": 1, "max_per_min": null, "max_per_day": null}));
    assert_clean(&env.wafleet(&["tenants", "limits", "lim_t", "--weight", "7", "--max-per-day", "500"]), "weight");
    assert_clean(&env.wafleet(&["tenants", "limits", "lim_t", "--max-per-min", "9"]), "max-per-min");
    assert_eq!(
        limits(&env),
        serde_json::json!({"weight": 7, "max_per_min": 9, "max_per_day": 500}),
        "setting max-per-min alone kept the weight and the daily cap"
    );
    assert_clean(&env.wafleet(&["tenants", "limits", "lim_t", "--max-per-day", "none"]), "clear a cap");
    assert_eq!(limits(&env), serde_json::json!({"weight": 7, "max_per_min": 9, "max_per_day": null}));
    let nothing = env.wafleet(&["tenants", "limits", "lim_t"]);
    assert!(!nothing.status.success(), "limits without a limit is refused, not a reset");
    assert_eq!(limits(&env)["weight"], 7);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_show_rules_list_remove_and_depth_of_named_tenants() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for r in ["show_a", "show_b"] {
        assert_clean(&env.wafleet(&["tenants", "add", r, "--bridge", r, "--bot", "rules"]), "tenants add");
    }
    let show = env.wafleet(&["tenants", "show", "show_a", "--json"]);
    assert_clean(&show, "tenants show");
    let t = json_of(&show);
    assert_eq!(t["customer_ref"], "show_a");
    assert_eq!(t["bridge"], "show_a");
    assert_eq!(t["bot_kind"], "rules");
    assert_eq!(t["queue_type"], "quorum");
    assert_eq!(t["generation"], 1);
    assert_eq!(t["account"], wafleet_fleet::accounts::DEFAULT_ACCOUNT);
    assert!(t["created_at"].is_string() && t["updated_at"].is_string(), "{t}");
    assert!(t.get("tenant_id").is_none(), "no internal id: {t}");
    let human = env.wafleet(&["tenants", "show", "show_a"]);
    assert_clean(&human, "tenants show (table)");
    assert!(text(&human.stdout).contains("rules"), "{}", text(&human.stdout));
    assert!(!env.wafleet(&["tenants", "show", "nobody"]).status.success());

    assert_clean(&env.wafleet(&["rules", "add", "show_a", "hours", "9 to 5"]), "rules add");
    assert_clean(&env.wafleet(&["rules", "add", "show_a", "price", "ask us"]), "rules add");
    assert_clean(&env.wafleet(&["rules", "add", "show_b", "hours", "never"]), "rules add (other tenant)");
    let rules = json_of(&env.wafleet(&["rules", "list", "show_a", "--json"]));
    let keywords: Vec<&str> = rules.as_array().unwrap().iter().map(|r| r["keyword"].as_str().unwrap()).collect();
    assert_eq!(keywords, ["hours", "price"], "only show_a's rules, in keyword order");
    let id = rules[1]["id"].as_i64().unwrap().to_string();
    assert_clean(&env.wafleet(&["rules", "remove", "show_a", "hours"]), "remove by keyword");
    assert_clean(&env.wafleet(&["rules", "remove", "show_a", &id]), "remove by id");
    assert_eq!(json_of(&env.wafleet(&["rules", "list", "show_a", "--json"])), serde_json::json!([]));
    let gone = env.wafleet(&["rules", "remove", "show_a", "hours"]);
    assert!(!gone.status.success(), "removing a missing rule fails");
    // ISOLATION: show_a's command could not remove show_b's rule of the same keyword.
    assert_eq!(json_of(&env.wafleet(&["rules", "list", "show_b", "--json"])).as_array().unwrap().len(), 1);

    let depth = env.wafleet(&["depth", "show_b", "--json"]);
    assert_clean(&depth, "depth <ref>");
    let rows = json_of(&depth)["tenants"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["customer_ref"], "show_b");
    assert!(!env.wafleet(&["depth", "nobody"]).status.success(), "an unknown ref is an error");
    env.cleanup().await;
}
