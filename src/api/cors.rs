//! CORS, opt-in per origin (sans-IO): what a page on another origin may read and call.
//!
//! Two lists grant it. `[server] player_origins` may *watch*: the routes in [`Scope::Player`]
//! (LL-HLS, WHEP and go2rtc's WebRTC offer, the MSE WebSockets, MJPEG, snapshots, recordings).
//! `[server] allowed_origins` may do everything, control included (cameras, config, analysis,
//! WHIP publishing). Every other origin gets no `Access-Control-*` header, so its page can
//! neither read an answer nor pass a preflight, and its state-changing calls and WebSocket
//! upgrades are refused with 403 before any handler runs (see `guard`).
//!
//! The answers reflect the one origin that asked (never `*`) with `Vary: Origin`, so a cache
//! never hands one origin's answer to another. No `Allow-Credentials`: livelens has no cookies;
//! its token is a header the page sets (`Authorization` is listed for that).

use axum::http::{header, HeaderName, HeaderValue, Method};

/// What a page's origin may do, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    /// Not listed: no CORS, no state changes, no WebSockets.
    Foreign,
    /// In `player_origins`: may watch (the player routes).
    Player,
    /// The server's own origin or one in `allowed_origins`: may do everything.
    Control,
}

/// Which grant a route asks of a cross-origin page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Watching: media out, and a WHEP viewer's own session.
    Player,
    /// Everything else: the camera list and settings, control calls, publishing.
    Control,
}

impl Scope {
    pub fn needs(self) -> Grant {
        match self {
            Scope::Player => Grant::Player,
            Scope::Control => Grant::Control,
        }
    }

    /// The methods a preflight may ask for on this scope's routes.
    fn methods(self) -> &'static str {
        match self {
            // WHEP: POST the offer, PATCH (trickle ICE) and DELETE its session.
            Scope::Player => "GET, HEAD, POST, PATCH, DELETE",
            Scope::Control => "GET, HEAD, POST, PUT, PATCH, DELETE",
        }
    }
}

/// Request headers a page may set: the token, the body's type (SDP, JSON, trickle ICE) and
/// WHEP/WHIP's `If-Match` on PATCH.
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match";
/// Response headers a page may read: WHEP/WHIP's session `Location`, ICE servers in `Link`,
/// the ICE `ETag`.
pub const EXPOSE_HEADERS: &str = "Location, Link, ETag";
/// How long a browser may reuse a preflight's answer (seconds).
const MAX_AGE: &str = "600";

/// Why a preflight was refused (the 403's message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The origin is in no list.
    Origin,
    /// The origin may watch, but this route needs `allowed_origins`.
    ControlOnly,
    /// The method asked for is not one this scope takes.
    Method(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Origin => f.write_str(
                "cross-origin requests from this page are refused; list its origin in [server] \
                 player_origins (to watch) or allowed_origins (to watch and control)",
            ),
            Refusal::ControlOnly => f.write_str(
                "this origin may only watch ([server] player_origins); this call needs it in \
                 [server] allowed_origins",
            ),
            Refusal::Method(m) => write!(f, "method {m:?} is not allowed here"),
        }
    }
}

/// Whether an origin with `grant` may make a call that changes state or opens a WebSocket on a
/// route of `scope`.
pub fn may_call(grant: Grant, scope: Scope) -> Result<(), Refusal> {
    match grant {
        Grant::Foreign => Err(Refusal::Origin),
        g if g < scope.needs() => Err(Refusal::ControlOnly),
        _ => Ok(()),
    }
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method` (a plain `OPTIONS`, e.g. WHEP's, goes to its handler).
pub fn is_preflight(method: &Method, has_origin: bool, has_request_method: bool) -> bool {
    method == Method::OPTIONS && has_origin && has_request_method
}

/// The answer to a preflight from `origin` (granted `grant`) asking for `method` on a route of
/// `scope`: the headers of a 204, or why it is refused (a 403 without CORS headers).
pub fn preflight(
    origin: &str,
    grant: Grant,
    scope: Scope,
    method: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
    may_call(grant, scope)?;
    let method = method.trim();
    if !scope
        .methods()
        .split(", ")
        .any(|m| m.eq_ignore_ascii_case(method))
    {
        return Err(Refusal::Method(method.to_string()));
    }
    let mut headers = allow_origin(origin)?;
    headers.extend([
        (
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(scope.methods()),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        ),
        (
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        ),
    ]);
    Ok(headers)
}

/// The CORS headers of an actual answer to `origin` on a route of `scope`: the grant's, or
/// none when the origin may not read it.
pub fn response_headers(
    origin: &str,
    grant: Grant,
    scope: Scope,
) -> Vec<(HeaderName, HeaderValue)> {
    if grant < scope.needs() {
        return Vec::new();
    }
    let Ok(mut headers) = allow_origin(origin) else {
        return Vec::new();
    };
    headers.push((
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    ));
    headers
}

/// `Access-Control-Allow-Origin` naming the origin that asked (a value that is not a valid
/// header cannot be a listed origin anyway).
fn allow_origin(origin: &str) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
    let value = HeaderValue::from_str(origin.trim()).map_err(|_| Refusal::Origin)?;
    Ok(vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, value)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(h: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a str> {
        h.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn players_watch_and_only_control_origins_control() {
        assert_eq!(may_call(Grant::Player, Scope::Player), Ok(()));
        assert_eq!(may_call(Grant::Control, Scope::Player), Ok(()));
        assert_eq!(may_call(Grant::Control, Scope::Control), Ok(()));
        assert_eq!(
            may_call(Grant::Player, Scope::Control),
            Err(Refusal::ControlOnly)
        );
        assert_eq!(
            may_call(Grant::Foreign, Scope::Player),
            Err(Refusal::Origin)
        );
        assert_eq!(
            may_call(Grant::Foreign, Scope::Control),
            Err(Refusal::Origin)
        );
    }

    #[test]
    fn a_granted_preflight_names_the_origin_methods_and_headers() {
        let h = preflight(
            "http://player.example",
            Grant::Player,
            Scope::Player,
            "POST",
        )
        .unwrap();
        assert_eq!(
            get(&h, &header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("http://player.example")
        );
        let methods = get(&h, &header::ACCESS_CONTROL_ALLOW_METHODS).unwrap();
        for m in ["POST", "PATCH", "DELETE"] {
            assert!(methods.contains(m), "{methods}");
        }
        let allowed = get(&h, &header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap();
        for name in ["Authorization", "Content-Type", "If-Match"] {
            assert!(allowed.contains(name), "{allowed}");
        }
        assert!(get(&h, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        // Methods are case-insensitive as sent; one the scope does not take is refused.
        assert!(preflight("http://p", Grant::Player, Scope::Player, "delete").is_ok());
        assert_eq!(
            preflight("http://p", Grant::Player, Scope::Player, "PUT"),
            Err(Refusal::Method("PUT".into()))
        );
    }

    #[test]
    fn refused_preflights_carry_no_cors_header() {
        assert_eq!(
            preflight("http://evil.example", Grant::Foreign, Scope::Player, "POST"),
            Err(Refusal::Origin)
        );
        assert_eq!(
            preflight(
                "http://player.example",
                Grant::Player,
                Scope::Control,
                "POST"
            ),
            Err(Refusal::ControlOnly)
        );
        assert!(preflight("http://a.example", Grant::Control, Scope::Control, "PATCH").is_ok());
        // An origin that is not a valid header value is never reflected.
        assert_eq!(
            preflight("http://a\nb", Grant::Control, Scope::Control, "GET"),
            Err(Refusal::Origin)
        );
    }

    #[test]
    fn answers_expose_the_session_headers_only_to_granted_origins() {
        let h = response_headers("http://player.example", Grant::Player, Scope::Player);
        assert_eq!(
            get(&h, &header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("http://player.example")
        );
        let exposed = get(&h, &header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap();
        for name in ["Location", "Link", "ETag"] {
            assert!(exposed.contains(name), "{exposed}");
        }
        assert!(
            response_headers("http://player.example", Grant::Player, Scope::Control).is_empty()
        );
        assert!(response_headers("http://evil.example", Grant::Foreign, Scope::Player).is_empty());
        assert!(
            !response_headers("http://dash.example", Grant::Control, Scope::Control).is_empty()
        );
    }

    #[test]
    fn only_options_with_origin_and_a_requested_method_is_a_preflight() {
        assert!(is_preflight(&Method::OPTIONS, true, true));
        assert!(!is_preflight(&Method::OPTIONS, false, true));
        assert!(!is_preflight(&Method::OPTIONS, true, false));
        assert!(!is_preflight(&Method::POST, true, true));
    }
}
