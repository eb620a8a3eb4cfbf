//! The page shell every console page shares (navigation, who is signed in, the sign-out form),
//! the error page, and small formatting helpers. maud escapes every interpolated value, so a ref,
//! a rule text or an error text renders as text.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use crate::auth::Caller;
use crate::problem::{ApiError, Kind};

/// Who is looking: the session's token and the CSRF token its forms carry.
#[derive(Clone, Debug)]
pub struct Viewer {
    /// The token the session signed in with.
    pub caller: Caller,
    /// The session's CSRF token (a hidden field of every form).
    pub csrf: String,
}

impl Viewer {
    /// A hidden CSRF field for a form.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }
}

/// htmx settings: no indicator styles (the CSP forbids inline styles), no eval, no scripts from
/// swapped content.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;

/// A whole page titled `title` around `body`.
pub fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { (title) " · wafleet console" }
                link rel="stylesheet" href="/console/assets/console.css";
                link rel="stylesheet" href="/console/assets/uPlot.min.css";
                script src="/console/assets/htmx.min.js" defer {}
                script src="/console/assets/uPlot.iife.min.js" defer {}
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    nav aria-label="Console" {
                        a href="/console/fleet" { "Fleet" }
                        a href="/console/tenants" { "Tenants" }
                        a href="/console/audit" { "Audit" }
                    }
                    @if let Some(viewer) = viewer {
                        div.who {
                            span { "Signed in with token " strong { (viewer.caller.name) } " (" (scopes(&viewer.caller)) ")" }
                            form method="post" action="/console/sign-out" {
                                (viewer.csrf_field())
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

fn scopes(caller: &Caller) -> String {
    caller.scopes.names().join(", ")
}

/// A console error: an API problem rendered as a page with the same status.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl PageError {
    /// A page error of `kind` with `detail`.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self(ApiError::new(kind, detail))
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<wafleet_fleet::Error> for PageError {
    fn from(e: wafleet_fleet::Error) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let error = self.0;
        error.log_server_error();
        let (_, title, status) = error.kind.describe();
        let body = html! {
            p.error role="alert" { (error.detail) }
            p { a href="/console/fleet" { "Back to the fleet" } }
        };
        let mut response = (status, page(title, None, body)).into_response();
        if let Some(secs) = error.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A page answer with `status`.
pub fn with_status(status: StatusCode, markup: Markup) -> Response {
    (status, markup).into_response()
}

/// A time as the console shows it (UTC, to the second).
pub fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// An optional time, `—` when absent.
pub fn maybe_time(at: Option<&DateTime<Utc>>) -> String {
    at.map_or_else(|| "—".to_owned(), time)
}

/// An age in seconds as `3 s`, `4 min`, `2 h`, `—` when unknown.
pub fn age(secs: Option<i64>) -> String {
    match secs {
        None => "—".to_owned(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7200 => format!("{} min", s / 60),
        Some(s) => format!("{} h", s / 3600),
    }
}

/// An optional count, `—` when unknown.
pub fn count(n: Option<u64>) -> String {
    n.map_or_else(|| "—".to_owned(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        assert_eq!(age(None), "—");
        assert_eq!(age(Some(42)), "42 s");
        assert_eq!(age(Some(600)), "10 min");
        assert_eq!(age(Some(3 * 3600 + 5)), "3 h");
    }
}
