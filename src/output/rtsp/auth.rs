//! Who may use the RTSP server, sans-IO: Basic and Digest (RFC 2617, MD5, no qop, which is
//! what FFmpeg, GStreamer, VLC and NVRs speak) against `[rtsp] users` and the API token (any
//! user name with the token as password), or the token as `?token=` in the URL, for clients
//! (and publishers such as drones and some NVRs) that cannot send credentials.
//!
//! Digest is checked against this connection's own nonce, so a response seen elsewhere cannot
//! be replayed here; Basic is accepted too (clients that only speak Basic exist), and the
//! challenge offers Digest first. Passwords are compared in constant time and never logged.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest as _, Md5};

use super::message::{Request, Response};
use crate::common::constant_time_eq;

pub const REALM: &str = "livelens";

/// A name and password that may read the re-stream; `user: None` accepts any name (the token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub user: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is a secret: it never reaches a log.
        write!(f, "Credential({:?}, ***)", self.user)
    }
}

/// One connection's view of the credentials: the list (empty: no auth needed) and its nonce.
#[derive(Debug, Clone)]
pub struct Auth {
    credentials: Vec<Credential>,
    nonce: String,
}

impl Auth {
    pub fn new(credentials: Vec<Credential>, nonce: String) -> Auth {
        Auth { credentials, nonce }
    }

    /// The same connection (its nonce) checking other credentials: a camera's publish key.
    pub fn with_credentials(&self, credentials: Vec<Credential>) -> Auth {
        Auth {
            credentials,
            nonce: self.nonce.clone(),
        }
    }

    pub fn required(&self) -> bool {
        !self.credentials.is_empty()
    }

    /// `Ok` when the request may go on; else the 401 to answer, with the challenges.
    pub fn check(&self, request: &Request) -> Result<(), Response> {
        if !self.required()
            || request
                .header("Authorization")
                .is_some_and(|a| self.accepts(request, a))
            || self.token_in_url(&request.uri)
        {
            return Ok(());
        }
        Err(Response::new(401, request.cseq())
            .header(
                "WWW-Authenticate",
                format!("Digest realm=\"{REALM}\", nonce=\"{}\"", self.nonce),
            )
            .header("WWW-Authenticate", format!("Basic realm=\"{REALM}\"")))
    }

    /// `?token=…` (or `&token=…`) in the request URL, matching the API token.
    fn token_in_url(&self, uri: &str) -> bool {
        let Some((_, query)) = uri.split_once('?') else {
            return false;
        };
        query
            .split('&')
            .filter_map(|p| p.strip_prefix("token="))
            .any(|given| {
                self.credentials.iter().any(|c| {
                    c.user.is_none() & constant_time_eq(c.password.as_bytes(), given.as_bytes())
                })
            })
    }

    fn accepts(&self, request: &Request, authorization: &str) -> bool {
        let (scheme, rest) = authorization
            .trim()
            .split_once(' ')
            .unwrap_or((authorization, ""));
        if scheme.eq_ignore_ascii_case("Basic") {
            let Some(decoded) = STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
            else {
                return false;
            };
            let Some((user, password)) = decoded.split_once(':') else {
                return false;
            };
            return self.credentials.iter().any(|c| {
                c.user.as_deref().is_none_or(|u| u == user)
                    & constant_time_eq(c.password.as_bytes(), password.as_bytes())
            });
        }
        if !scheme.eq_ignore_ascii_case("Digest") {
            return false;
        }
        let params = digest_params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            get("username"),
            get("realm"),
            get("nonce"),
            get("uri"),
            get("response"),
        ) else {
            return false;
        };
        if realm != REALM || !constant_time_eq(nonce.as_bytes(), self.nonce.as_bytes()) {
            return false;
        }
        let ha2 = md5_hex(&format!("{}:{uri}", request.method.as_str()));
        self.credentials.iter().any(|c| {
            if c.user.as_deref().is_some_and(|u| u != user) {
                return false;
            }
            let ha1 = md5_hex(&format!("{user}:{REALM}:{}", c.password));
            let expected = md5_hex(&format!("{ha1}:{}:{ha2}", self.nonce));
            constant_time_eq(
                expected.as_bytes(),
                response.to_ascii_lowercase().as_bytes(),
            )
        })
    }
}

/// What an ANNOUNCE's credentials opened on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishGrant {
    /// The server's own credentials (or none asked): the connection is authenticated.
    Server,
    /// A publish secret only (the API token or the camera's key): its publishing session.
    Publisher,
}

/// Whether an ANNOUNCE may go on. `server` is who may read (`[rtsp] users`, and the token where
/// readers need credentials); `publish` holds the camera's publish secrets (the API token, the
/// camera's key: `source::publish::publish_secrets`). Publish secrets are asked for wherever
/// they are set, even on loopback where readers need nothing: WHIP and RTMP ask for them there,
/// and RTSP must not be the open door beside them. The server's credentials still publish, as
/// they always did. `authenticated`: this connection passed `server` before.
pub fn check_publisher(
    server: &Auth,
    publish: &Auth,
    authenticated: bool,
    request: &Request,
) -> Result<PublishGrant, Response> {
    if !publish.required() {
        if authenticated {
            return Ok(PublishGrant::Server);
        }
        return server.check(request).map(|()| PublishGrant::Server);
    }
    match publish.check(request) {
        Ok(()) => Ok(PublishGrant::Publisher),
        Err(_) if server.required() && (authenticated || server.check(request).is_ok()) => {
            Ok(PublishGrant::Server)
        }
        Err(challenge) => Err(challenge),
    }
}

/// `name="value", name=value, …` as Digest writes them (commas inside quotes kept).
fn digest_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        out.push((name.trim().to_string(), value.to_string()));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::rtsp::message::Method;

    fn request(authorization: Option<&str>) -> Request {
        let mut headers = vec![("CSeq".to_string(), "3".to_string())];
        if let Some(a) = authorization {
            headers.push(("Authorization".to_string(), a.to_string()));
        }
        Request {
            method: Method::Describe,
            uri: "rtsp://127.0.0.1:8554/door".into(),
            headers,
            body: Vec::new(),
        }
    }

    fn auth() -> Auth {
        Auth::new(
            vec![
                Credential {
                    user: Some("nvr".into()),
                    password: "s3cret".into(),
                },
                Credential {
                    user: None,
                    password: "token-abc".into(),
                },
            ],
            "n0nce".into(),
        )
    }

    fn digest(user: &str, password: &str, nonce: &str, method: &str, uri: &str) -> String {
        let ha1 = md5_hex(&format!("{user}:{REALM}:{password}"));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
        )
    }

    #[test]
    fn no_credentials_configured_means_open() {
        assert!(Auth::new(Vec::new(), "n".into())
            .check(&request(None))
            .is_ok());
    }

    #[test]
    fn challenge_offers_digest_then_basic_and_echoes_cseq() {
        let r = auth().check(&request(None)).unwrap_err();
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(
            text.starts_with("RTSP/1.0 401 Unauthorized\r\nCSeq: 3\r\n"),
            "{text}"
        );
        let digest = text.find("WWW-Authenticate: Digest realm=\"livelens\", nonce=\"n0nce\"");
        let basic = text.find("WWW-Authenticate: Basic realm=\"livelens\"");
        assert!(digest.unwrap() < basic.unwrap());
    }

    #[test]
    fn basic_with_a_user_or_the_token_under_any_name() {
        let basic = |s: &str| format!("Basic {}", STANDARD.encode(s));
        assert!(auth().check(&request(Some(&basic("nvr:s3cret")))).is_ok());
        assert!(auth()
            .check(&request(Some(&basic("anyone:token-abc"))))
            .is_ok());
        for bad in ["nvr:wrong", "other:s3cret", "nvr", "nvr:s3cret2", ""] {
            assert!(auth().check(&request(Some(&basic(bad)))).is_err(), "{bad}");
        }
        assert!(auth().check(&request(Some("Basic !!notbase64"))).is_err());
        assert!(auth().check(&request(Some("Bearer token-abc"))).is_err());
    }

    #[test]
    fn digest_as_ffmpeg_computes_it() {
        let uri = "rtsp://127.0.0.1:8554/door";
        let ok = digest("nvr", "s3cret", "n0nce", "DESCRIBE", uri);
        assert!(auth().check(&request(Some(&ok))).is_ok());
        let token = digest("vlc", "token-abc", "n0nce", "DESCRIBE", uri);
        assert!(auth().check(&request(Some(&token))).is_ok());
        // Wrong password, another connection's nonce, another method, another user's name.
        for bad in [
            digest("nvr", "nope", "n0nce", "DESCRIBE", uri),
            digest("nvr", "s3cret", "other", "DESCRIBE", uri),
            digest("nvr", "s3cret", "n0nce", "SETUP", uri),
            digest("cam", "s3cret", "n0nce", "DESCRIBE", uri),
            "Digest username=\"nvr\"".to_string(),
        ] {
            assert!(auth().check(&request(Some(&bad))).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_api_token_in_the_url_and_only_the_token() {
        let with_uri = |uri: &str| Request {
            uri: uri.into(),
            ..request(None)
        };
        assert!(auth()
            .check(&with_uri("rtsp://h/door?token=token-abc"))
            .is_ok());
        assert!(auth()
            .check(&with_uri("rtsp://h/door/trackID=0?a=1&token=token-abc"))
            .is_ok());
        for bad in [
            "rtsp://h/door?token=token-abd",
            "rtsp://h/door?token=s3cret",
            "rtsp://h/door?xtoken=token-abc",
            "rtsp://h/door#token=token-abc",
        ] {
            assert!(auth().check(&with_uri(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_publish_secret_is_asked_for_even_where_readers_need_nothing() {
        let announce = |authorization: Option<&str>, uri: &str| Request {
            method: Method::Announce,
            uri: uri.into(),
            ..request(authorization)
        };
        let open = Auth::new(Vec::new(), "n0nce".into());
        let token = open.with_credentials(vec![Credential {
            user: None,
            password: "token-abc".into(),
        }]);
        let none = open.with_credentials(Vec::new());
        let uri = "rtsp://127.0.0.1:8554/door";
        // Loopback, no token, no key: nothing asked, as before.
        assert_eq!(
            check_publisher(&open, &none, false, &announce(None, uri)),
            Ok(PublishGrant::Server)
        );
        // Loopback with a token: 401 without it, whatever readers need.
        let r = check_publisher(&open, &token, false, &announce(None, uri)).unwrap_err();
        assert_eq!(r.status, 401);
        let r = check_publisher(&open, &token, true, &announce(None, uri)).unwrap_err();
        assert_eq!(r.status, 401, "reading freely does not open publishing");
        let basic = format!("Basic {}", STANDARD.encode("any:token-abc"));
        let digest = digest("ffmpeg", "token-abc", "n0nce", "ANNOUNCE", uri);
        for given in [
            announce(Some(&basic), uri),
            announce(Some(&digest), uri),
            announce(None, &format!("{uri}?token=token-abc")),
        ] {
            assert_eq!(
                check_publisher(&open, &token, false, &given),
                Ok(PublishGrant::Publisher)
            );
        }
        let wrong = format!("Basic {}", STANDARD.encode("any:token-abd"));
        assert!(check_publisher(&open, &token, false, &announce(Some(&wrong), uri)).is_err());
        // Where readers need credentials, theirs publish too (a user of `[rtsp] users`).
        let users = auth();
        let nvr = format!("Basic {}", STANDARD.encode("nvr:s3cret"));
        assert_eq!(
            check_publisher(&users, &token, false, &announce(Some(&nvr), uri)),
            Ok(PublishGrant::Server)
        );
        assert_eq!(
            check_publisher(&users, &none, false, &announce(Some(&nvr), uri)),
            Ok(PublishGrant::Server)
        );
        assert!(check_publisher(&users, &none, false, &announce(None, uri)).is_err());
    }

    #[test]
    fn digest_parameters_with_commas_in_quotes_and_bare_values() {
        let p = digest_params(
            "username=\"a,b\", realm=livelens,nonce=\"x\" , uri=\"rtsp://h/c?x=1,2\"",
        );
        assert_eq!(
            p,
            [
                ("username".to_string(), "a,b".to_string()),
                ("realm".to_string(), "livelens".to_string()),
                ("nonce".to_string(), "x".to_string()),
                ("uri".to_string(), "rtsp://h/c?x=1,2".to_string()),
            ]
        );
    }

    #[test]
    fn the_password_never_reaches_debug_output() {
        let text = format!("{:?}", auth());
        assert!(
            !text.contains("s3cret") && !text.contains("token-abc"),
            "{text}"
        );
    }
}
