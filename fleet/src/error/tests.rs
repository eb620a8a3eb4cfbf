//! Unit tests of the parent module.
use std::error::Error as _;

use super::*;

#[test]
fn messages_keep_the_texts_operators_and_tests_know() {
    let cases = [
        (
            Error::BudgetWait { account: "main".into(), bucket: "send", waited: Duration::from_secs(30) },
            "account main: no send token within 30s (paused or exhausted); try again later",
        ),
        (
            Error::from(ManagementError::Status {
                method: "PUT",
                path: "policies/v/p".into(),
                status: reqwest::StatusCode::UNAUTHORIZED,
                body: Some("denied".into()),
            }),
            "RabbitMQ management API: PUT policies/v/p -> 401 Unauthorized: denied",
        ),
        (
            Error::from(BadBotUrl::NotHttp),
            "--bot-url must be an http(s) URL with a host, e.g. https://bot.example.com/hook",
        ),
        (Error::ConnectionLost, "AMQP connection lost"),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
    let role = Error::from(UnsafeRole::Superuser("postgres".into())).to_string();
    assert!(role.starts_with("unsafe database role: role postgres is a superuser") && role.contains("DATABASE_URL"));
}

#[test]
fn a_refusal_keeps_its_cause_as_source_not_as_text() {
    let Err(source) = CustomerRef::parse("") else { panic!("an empty ref must not parse") };
    let error = Error::from(InvalidInput::CustomerRef { raw: String::new(), source });
    assert_eq!(error.to_string(), "customer_ref \"\" is invalid");
    assert!(error.source().is_some_and(|s| s.to_string() == "customer_ref is empty"));
}

#[test]
fn a_pool_timeout_is_back_pressure_not_an_outage() {
    let busy = Error::from(sqlx::Error::PoolTimedOut);
    assert!(busy.is_pool_timeout());
    assert!(!busy.is_database_unavailable(), "a busy pool must not tear the consumers down");
    let reset = Error::from(sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
    assert!(reset.is_database_unavailable() && !reset.is_pool_timeout());
}
