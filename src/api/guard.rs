//! Who may call what: the Host and Origin checks every request passes, and the token that
//! state-changing calls need. The rules are plain functions of header values (tested on strings);
//! the middleware only reads the headers and maps a refusal to its status.
//!
//! - **Host** (DNS rebinding): a browser that resolved `attacker.example` to 127.0.0.1 still sends
//!   `Host: attacker.example`. Allowed: IP literals, `localhost`, this machine's name, and the
//!   names in `[server] allowed_hosts` (`"*"` allows any, e.g. behind a reverse proxy).
//! - **Origin** (cross-site requests): WebSockets have no CORS and a form can POST anywhere, so a
//!   WebSocket upgrade or a state-changing call that carries an `Origin` must come from this
//!   server's own origin or one listed in `[server] allowed_origins`. Clients that send no
//!   `Origin` (curl, ffmpeg, scripts) are not browsers acting for a foreign page.
//! - **Token**: decided by the matched route (see `api::router`), never by the path's text.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, SharedState};
use crate::common::constant_time_eq;

/// The configured exceptions to the Host and Origin rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Lower-case host names (no port) accepted besides IPs, localhost and this machine's name.
    pub hosts: Vec<String>,
    /// Lower-case origins (`scheme://host[:port]`) accepted besides the server's own.
    pub origins: Vec<String>,
}

impl Access {
    pub fn new(hosts: &[String], origins: &[String]) -> Access {
        let mut hosts: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        if let Some(name) = machine_name() {
            hosts.push(format!("{name}.local"));
            hosts.push(name);
        }
        Access {
            hosts,
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a `Host` header value (`name[:port]`, `[v6]:port`) may be served.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.hosts.iter().any(|h| h == "*" || *h == name)
    }

    /// Whether a request with this `Origin`, sent to this `Host`, may change state or open a
    /// WebSocket.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .zip(host)
            .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host));
        same || self.origins.iter().any(|o| o == "*" || *o == origin)
    }
}

/// The host part of a `Host` value: without the port, and without the brackets of an IPv6.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn machine_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

fn header_text<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Every request: Host first, then Origin for WebSocket upgrades and state-changing calls.
pub async fn check_host_and_origin(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    // HTTP/2 carries the host in the URI's authority, HTTP/1.1 in the Host header.
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| header_text(headers, &header::HOST));
    if let Some(host) = host {
        if !state.access.host_allowed(host) {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "this server does not answer to that host name; add it to [server] allowed_hosts",
            )
            .into_response();
        }
    }
    let upgrade = headers.contains_key(header::UPGRADE);
    if upgrade || changes_state(request.method()) {
        if let Some(origin) = header_text(headers, &header::ORIGIN) {
            if !state.access.origin_allowed(origin, host) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "requests from another web site's page are refused; list its origin in \
                     [server] allowed_origins to allow them",
                )
                .into_response();
            }
        } else if headers.contains_key(header::ORIGIN) {
            return ApiError::new(StatusCode::FORBIDDEN, "the Origin header is not text")
                .into_response();
        }
    }
    next.run(request).await
}

/// Control routes only (see `api::router`): a state-changing method needs the token when one is
/// configured.
pub async fn require_token(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    if let (true, Some(token)) = (changes_state(request.method()), &state.token) {
        let given = header_text(request.headers(), &header::AUTHORIZATION)
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this call changes state and needs the header Authorization: Bearer <token>",
            )
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access {
            hosts: vec!["cams.example".into()],
            origins: vec!["https://dash.example".into()],
        }
    }

    #[test]
    fn hosts_are_ips_localhost_or_listed() {
        let a = access();
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "192.168.1.4:80",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:1",
            "cams.example",
            "CAMS.example:443",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8080",
            "127.0.0.1.attacker.example",
            "localhost.attacker.example",
            "cams.example.attacker",
            "",
        ] {
            assert!(!a.host_allowed(bad), "{bad}");
        }
        let any = Access {
            hosts: vec!["*".into()],
            origins: vec![],
        };
        assert!(any.host_allowed("anything.example"));
    }

    #[test]
    fn origins_are_the_servers_own_or_listed() {
        let a = access();
        let host = Some("127.0.0.1:8080");
        assert!(a.origin_allowed("http://127.0.0.1:8080", host));
        assert!(a.origin_allowed("https://127.0.0.1:8080", host));
        assert!(a.origin_allowed("https://dash.example", host));
        assert!(!a.origin_allowed("http://127.0.0.1:8081", host));
        assert!(!a.origin_allowed("http://attacker.example", host));
        assert!(!a.origin_allowed("null", host));
        assert!(!a.origin_allowed("http://127.0.0.1:8080", None));
        assert!(!a.origin_allowed("https://dash.example.attacker", host));
    }

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("a.example:80"), "a.example");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("a.example"), "a.example");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
