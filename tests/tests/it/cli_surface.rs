//! The operator's side of `wafleet`, run as a real process: clean stderr on success.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_touch_the_broker_end_without_error_or_warning_lines() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    assert_clean(&env.wafleet(&["tenants", "add", "clean_a", "--bridge", "clean_a"]), "tenants add");
    assert_clean(&env.wafleet(&["dlq", "list"]), "dlq list");
    assert_clean(&env.wafleet(&["dlq", "show", "clean_a"]), "dlq show");
    assert_clean(&env.wafleet(&["dlq", "purge", "clean_a", "--yes"]), "dlq purge");
    env.cleanup().await;
}
