//! AMQP connection helpers shared by ingest, worker and CLI.

use lapin::{Connection, ConnectionProperties};

/// Opens an AMQP connection driven by the current tokio runtime.
pub async fn connect(amqp_url: &str, connection_name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default()
        .with_connection_name(connection_name.into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(amqp_url, properties).await
}

/// The vhost named by an AMQP URL (`/` when the URL has no path), percent-decoded.
pub fn vhost_of(amqp_url: &str) -> String {
    let after_scheme = amqp_url.split_once("://").map(|(_, rest)| rest).unwrap_or(amqp_url);
    let path = after_scheme.split_once('/').map(|(_, p)| p).unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".to_owned();
    }
    percent_decode(path)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An AMQP URL with its password replaced, safe to log.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_is_read_from_the_url_path() {
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672"), "/");
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(vhost_of("amqp://g:g@h:5672/wafleet_t1?heartbeat=10"), "wafleet_t1");
    }

    #[test]
    fn redacted_urls_hide_the_password() {
        assert_eq!(redact_url("amqp://u:secret@h:5672/v"), "amqp://u:***@h:5672/v");
        assert_eq!(redact_url("amqp://h:5672"), "amqp://h:5672");
    }
}
