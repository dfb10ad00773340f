//! Who may call what: the Host and Origin checks every request passes, and the token that
//! state-changing calls need. The rules are plain functions of header values (tested on strings);
//! the middleware only reads the headers and maps a refusal to its status.
//!
//! - **Host** (DNS rebinding): a browser that resolved `attacker.example` to 127.0.0.1 still sends
//!   `Host: attacker.example`. Allowed: IP literals, `localhost`, this machine's name, and the
//!   names in `[server] allowed_hosts` (`"*"` allows any, e.g. behind a reverse proxy).
//! - **Origin** (cross-site requests): WebSockets have no CORS and a form can POST anywhere, so a
//!   WebSocket upgrade or a state-changing call that carries an `Origin` must come from this
//!   server's own origin or one listed in `[server] allowed_origins` (everything) or
//!   `player_origins` (watching only: the matched route's [`Scope`] decides, in [`cors`]).
//!   Clients that send no `Origin` (curl, ffmpeg, scripts) are not browsers acting for a foreign
//!   page. The CORS answers themselves are `api::cors`'s policy.
//! - **Token**: decided by the matched route (see `api::router`), never by the path's text.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::cors::{self as policy, Grant, Scope};
use super::{ApiError, SharedState};
use crate::common::constant_time_eq;

/// The configured exceptions to the Host and Origin rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Lower-case host names (no port) accepted besides IPs, localhost and this machine's name.
    pub hosts: Vec<String>,
    /// Lower-case origins (`scheme://host[:port]`) accepted besides the server's own.
    pub origins: Vec<String>,
    /// Lower-case origins that may only watch (`[server] player_origins`).
    pub players: Vec<String>,
}

fn normalized(origins: &[String]) -> Vec<String> {
    origins
        .iter()
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
        .collect()
}

impl Access {
    pub fn new(hosts: &[String], origins: &[String], players: &[String]) -> Access {
        let mut hosts: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        if let Some(name) = machine_name() {
            hosts.push(format!("{name}.local"));
            hosts.push(name);
        }
        Access {
            hosts,
            origins: normalized(origins),
            players: normalized(players),
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

    /// What a page with this `Origin`, sent to this `Host`, may do: everything (the server's own
    /// origin, `allowed_origins`), watch (`player_origins`) or nothing.
    pub fn grant(&self, origin: &str, host: Option<&str>) -> Grant {
        let origin = origin.trim().to_ascii_lowercase();
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .zip(host)
            .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host));
        let listed = |list: &[String]| list.iter().any(|o| o == "*" || *o == origin);
        if same || listed(&self.origins) {
            Grant::Control
        } else if listed(&self.players) {
            Grant::Player
        } else {
            Grant::Foreign
        }
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

/// The host a request was sent to: HTTP/2 carries it in the URI's authority, HTTP/1.1 in the
/// Host header.
fn request_host(request: &Request) -> Option<&str> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| header_text(request.headers(), &header::HOST))
}

/// Every request, before routing: Host first, then Origin for WebSocket upgrades and
/// state-changing calls (an origin in no list is refused here, whatever the route).
pub async fn check_host_and_origin(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = request_host(&request);
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
            if state.access.grant(origin, host) == Grant::Foreign {
                return ApiError::new(StatusCode::FORBIDDEN, policy::Refusal::Origin.to_string())
                    .into_response();
            }
        } else if headers.contains_key(header::ORIGIN) {
            return ApiError::new(StatusCode::FORBIDDEN, "the Origin header is not text")
                .into_response();
        }
    }
    next.run(request).await
}

/// Every route, after routing, with the route's [`Scope`]: answers CORS preflights, refuses a
/// watching-only origin's state changes and WebSockets on control routes, and gives granted
/// origins their CORS headers. Applied with `Router::layer` (not `route_layer`) so a preflight
/// reaches it on routes that have no `OPTIONS` handler.
pub async fn cors(
    State((state, scope)): State<(SharedState, Scope)>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let Some(origin) = header_text(headers, &header::ORIGIN).map(str::to_string) else {
        // No Origin: not a page's cross-origin request (a non-text Origin was refused before).
        return next.run(request).await;
    };
    let grant = state.access.grant(&origin, request_host(&request));
    let asked = header_text(headers, &header::ACCESS_CONTROL_REQUEST_METHOD).map(str::to_string);
    if let (true, Some(method)) = (
        policy::is_preflight(request.method(), true, asked.is_some()),
        asked,
    ) {
        let mut response = match policy::preflight(&origin, grant, scope, &method) {
            Ok(allowed) => {
                let mut r = StatusCode::NO_CONTENT.into_response();
                r.headers_mut().extend(allowed);
                r
            }
            Err(refusal) => {
                ApiError::new(StatusCode::FORBIDDEN, refusal.to_string()).into_response()
            }
        };
        vary(&mut response, "Origin, Access-Control-Request-Method");
        return response;
    }
    if headers.contains_key(header::UPGRADE) || changes_state(request.method()) {
        if let Err(refusal) = policy::may_call(grant, scope) {
            let mut response =
                ApiError::new(StatusCode::FORBIDDEN, refusal.to_string()).into_response();
            vary(&mut response, "Origin");
            return response;
        }
    }
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .extend(policy::response_headers(&origin, grant, scope));
    vary(&mut response, "Origin");
    response
}

/// Adds to `Vary` (a cache must not give one origin's answer to another).
fn vary(response: &mut Response, names: &'static str) {
    response
        .headers_mut()
        .append(header::VARY, axum::http::HeaderValue::from_static(names));
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
            players: vec!["https://player.example".into()],
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
            ..Access::default()
        };
        assert!(any.host_allowed("anything.example"));
    }

    #[test]
    fn origins_are_the_servers_own_or_listed() {
        let a = access();
        let host = Some("127.0.0.1:8080");
        let grant = |origin| a.grant(origin, host);
        assert_eq!(grant("http://127.0.0.1:8080"), Grant::Control);
        assert_eq!(grant("https://127.0.0.1:8080"), Grant::Control);
        assert_eq!(grant("https://dash.example"), Grant::Control);
        assert_eq!(grant("HTTPS://Dash.Example"), Grant::Control);
        assert_eq!(grant("https://player.example"), Grant::Player);
        assert_eq!(grant("http://player.example"), Grant::Foreign);
        assert_eq!(grant("http://127.0.0.1:8081"), Grant::Foreign);
        assert_eq!(grant("http://attacker.example"), Grant::Foreign);
        assert_eq!(grant("null"), Grant::Foreign);
        assert_eq!(grant("https://dash.example.attacker"), Grant::Foreign);
        assert_eq!(grant("https://player.example.attacker"), Grant::Foreign);
        assert_eq!(
            a.grant("http://127.0.0.1:8080", None),
            Grant::Foreign,
            "no Host: no own origin"
        );
        // A trailing slash in the config is not part of an origin.
        let b = Access::new(&[], &[], &["https://p.example/".into()]);
        assert_eq!(b.grant("https://p.example", host), Grant::Player);
        // `*` grants what its list grants.
        let c = Access::new(&[], &[], &["*".into()]);
        assert_eq!(c.grant("https://any.example", host), Grant::Player);
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
