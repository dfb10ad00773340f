//! WHEP (draft-ietf-wish-whep) at `/api/cameras/{id}/whep`, WHIP (RFC 9725) at
//! `/api/cameras/{id}/whip`, and go2rtc's `POST /api/webrtc?src={id}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, SharedState, Src};
use crate::output::webrtc::sdpfrag::PatchError;
use crate::output::webrtc::OfferError;
use crate::source::publish::may_publish;

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request body, or a JSON error (413 over the size limit).
fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the offer is larger than {} KiB", super::MAX_BODY / 1024)
        } else {
            r.body_text()
        };
        ApiError::new(status, message)
    })
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

impl From<OfferError> for ApiError {
    fn from(e: OfferError) -> ApiError {
        let status = match e {
            OfferError::Malformed(_) | OfferError::NotSending(_) => StatusCode::BAD_REQUEST,
            OfferError::NoCodec(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OfferError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OfferError::NotPublishable(_) => StatusCode::METHOD_NOT_ALLOWED,
            OfferError::Busy(_) => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Checks the body is text that looks like an SDP offer; the message names what is wrong.
pub(crate) fn sdp_text(body: &Bytes) -> Result<&str, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "the offer is empty"));
    }
    if !text.trim_start().starts_with("v=0") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the offer is not SDP (it must start with v=0)",
        ));
    }
    Ok(text)
}

/// A WHEP or WHIP body: `application/sdp` text that looks like an offer (`what` names the
/// protocol in the messages).
fn offer_body(
    what: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    let body = body_or_error(body)?;
    if content_type(headers) != "application/sdp" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a {what} offer needs Content-Type: application/sdp"),
        ));
    }
    Ok(sdp_text(&body)?.to_string())
}

/// 201 with the SDP answer and the session's URL (`…/{id}/{kind}/{session}`) to `DELETE`.
fn created(id: &str, kind: &str, session: &str, answer: String) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (
                header::LOCATION,
                format!("/api/cameras/{id}/{kind}/{session}"),
            ),
        ],
        answer,
    )
        .into_response()
}

/// Ends a WHEP or WHIP session of camera `id`; 404 naming `what` when it has none such.
async fn end_session(
    state: &SharedState,
    what: &str,
    id: &str,
    session: &str,
) -> Result<StatusCode, ApiError> {
    state.cameras.get(id)?;
    let removed = match &state.webrtc {
        Some(w) => w.remove(id, session).await,
        None => false,
    };
    if removed {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no {what} session {session:?}"),
        ))
    }
}

/// How long an offer waits for an idle or starting camera to describe its video.
const WAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn answer(state: &SharedState, id: &str, sdp: &str) -> Result<(String, String), ApiError> {
    let camera = state.cameras.stream(id)?;
    let Some(webrtc) = &state.webrtc else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "WebRTC is not running (see the log for why the UDP port could not be opened)",
        ));
    };
    if !camera.state().is_running() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("camera {id:?} is stopped"),
        ));
    }
    // The answer names the video codec: an idle on-demand camera (or one still starting) is
    // woken and given a moment to say what it sends.
    if camera.view().video.is_none() {
        camera.wake(WAKE_LIMIT).await;
    }
    Ok(webrtc.offer(camera, sdp).await?)
}

pub async fn whep_post(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.cameras.get(&id)?;
    let sdp = offer_body("WHEP", &headers, body)?;
    let (session, answer) = answer(&state, &id, &sdp).await?;
    Ok(created(&id, "whep", &session, answer))
}

pub async fn whep_delete(
    State(state): State<SharedState>,
    Path((id, session)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    end_session(&state, "WHEP", &id, &session).await
}

/// WHIP: a publisher's offer for a `publish:` camera, with the API token or the camera's publish
/// key as `Authorization: Bearer` when either is configured.
pub async fn whip_post(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let sdp = offer_body("WHIP", &headers, body)?;
    // Before the camera is looked up for good, so `[publish] auto_create` makes no camera for
    // a request that is refused anyway: the credentials, then the offer.
    let given =
        header_text(&headers, header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
    let existing = state.cameras.stream(&id).ok();
    if !may_publish(
        state.token.as_deref(),
        existing.as_ref().map(|s| s.inlet()),
        given,
    ) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "publishing needs the header Authorization: Bearer <the API token or the camera's publish key>",
        ));
    }
    crate::output::webrtc::check_publish_offer(&sdp)?;
    let camera = state.cameras.publish_target(&id).await?;
    let Some(webrtc) = &state.webrtc else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "WebRTC is not running (see the log for why the UDP port could not be opened)",
        ));
    };
    let (session, answer) = webrtc.publish(camera, &sdp).await?;
    Ok(created(&id, "whip", &session, answer))
}

/// WHIP: the publisher leaves (its camera goes idle at once). The session id, 128 random
/// bits only the publisher was told, is what authorizes it, as for WHEP.
pub async fn whip_delete(
    State(state): State<SharedState>,
    Path((id, session)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    end_session(&state, "WHIP", &id, &session).await
}

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> ApiError {
        let status = match e {
            PatchError::UnknownSession(_) => StatusCode::NOT_FOUND,
            PatchError::Malformed(_) => StatusCode::BAD_REQUEST,
            PatchError::IceRestartUnsupported => StatusCode::UNPROCESSABLE_ENTITY,
            PatchError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// WHIP/WHEP `PATCH` of a session (RFC 9725 §4.3): trickled candidates are applied (204); an
/// ICE restart gets 422 (not supported); an unknown session 404. Never a 204 for what was not
/// done.
pub async fn whep_patch(
    State(state): State<SharedState>,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body_or_error(body)?;
    if content_type(&headers) != "application/trickle-ice-sdpfrag" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a PATCH needs Content-Type: application/trickle-ice-sdpfrag",
        ));
    }
    state.cameras.get(&id)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the sdpfrag is not UTF-8 text"))?;
    // RFC 9725 §4.3.2: an ICE restart carries If-Match: *.
    let if_match_star = header_text(&headers, header::IF_MATCH).is_some_and(|v| v.trim() == "*");
    let Some(webrtc) = &state.webrtc else {
        return Err(PatchError::UnknownSession(session).into());
    };
    webrtc.patch(&id, &session, text, if_match_star).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn whep_options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ALLOW, "OPTIONS, POST"),
            (
                header::HeaderName::from_static("accept-post"),
                "application/sdp",
            ),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
struct JsonOffer {
    #[serde(rename = "type")]
    kind: Option<String>,
    sdp: String,
}

/// go2rtc's `POST /api/webrtc?src=ID`: a JSON `{type:"offer",sdp}` gets a JSON answer; a raw SDP
/// body gets a raw SDP answer.
pub async fn go2rtc(
    State(state): State<SharedState>,
    Query(q): Query<Src>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(body)?;
    let id = q.id()?;
    state.cameras.get(&id)?;
    // A cross-site form can only send text/plain, urlencoded or multipart bodies.
    let kind = content_type(&headers);
    if !matches!(kind.as_str(), "application/sdp" | "application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an offer needs Content-Type: application/sdp, or application/json for {\"type\":\"offer\",\"sdp\":…}",
        ));
    }
    let trimmed = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&b""[..], |i| &body[i..]);
    if trimmed.first() == Some(&b'{') {
        let offer: JsonOffer = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("malformed JSON offer: {e}"),
            )
        })?;
        if offer.kind.as_deref().is_some_and(|k| k != "offer") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "expected {\"type\":\"offer\"}",
            ));
        }
        let sdp = sdp_text(&Bytes::from(offer.sdp))?.to_string();
        let (_, answer) = answer(&state, &id, &sdp).await?;
        return Ok(axum::Json(json!({"type": "answer", "sdp": answer})).into_response());
    }
    let sdp = sdp_text(&body)?;
    let (_, answer) = answer(&state, &id, sdp).await?;
    Ok(([(header::CONTENT_TYPE, "application/sdp")], answer).into_response())
}
