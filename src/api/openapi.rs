//! `GET /api/openapi.json`: the API described as OpenAPI 3.1, kept next to the routes it documents.

use axum::Json;
use serde_json::{json, Value};

pub async fn document() -> Json<Value> {
    Json(spec())
}

fn spec() -> Value {
    let error = json!({ "$ref": "#/components/responses/Error" });
    let id_param =
        json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }]);
    let camera = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Camera" } } } });
    let rtsp = json!({ "type": ["object", "null"], "properties": {
        "host": { "type": ["string", "null"], "description": "null: every interface; use the host the page came from" },
        "port": { "type": "integer" },
        "udp_ports": { "type": ["array", "null"], "items": { "type": "integer" }, "description": "the server's RTP and RTCP ports; null: TCP only" },
        "auth": { "type": "boolean", "description": "clients must authenticate (Digest or Basic)" } } });
    let outputs = json!({ "description": "outputs", "content": { "application/json": {
        "schema": { "type": "object", "properties": { "rtsp": rtsp } } } } });
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "livelens",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Live cameras in, browsers out. State-changing calls need `Authorization: Bearer <token>` when a token is configured."
        },
        "paths": {
            "/healthz": { "get": { "summary": "Liveness and camera counts", "responses": { "200": { "description": "ok" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text exposition format" } } } },
            "/api/resources": { "get": { "summary": "Counted resources (tasks, viewers, sockets, children, fds, RSS)",
                "responses": { "200": { "description": "counts", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Resources" } } } } } } },
            "/api/events": { "get": { "summary": "Analysis events, newest first",
                "parameters": [
                    { "name": "camera", "in": "query", "schema": { "type": "string" } },
                    { "name": "kind", "in": "query", "schema": { "type": "string", "examples": ["motion", "vlm"] } },
                    { "name": "since", "in": "query", "description": "ms since the Unix epoch", "schema": { "type": "integer" } },
                    { "name": "until", "in": "query", "description": "ms since the Unix epoch", "schema": { "type": "integer" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "maximum": 1000 } } ],
                "responses": { "200": { "description": "events" }, "400": { "description": "a bad query parameter" } } } },
            "/api/events/{id}/snapshot.jpg": { "get": { "summary": "The picture an event came from",
                "responses": { "200": { "description": "image/jpeg" }, "404": { "description": "no such event or no picture" } } } },
            "/api/events/stream": { "get": { "summary": "New events as Server-Sent Events (event: kind, data: JSON)",
                "responses": { "200": { "description": "text/event-stream" } } } },
            "/api/cameras/{id}/mjpeg": { "parameters": id_param, "get": { "summary": "MJPEG: multipart/x-mixed-replace JPEG pictures at [mjpeg] fps and width, from one encoder per camera shared by its viewers",
                "responses": { "200": { "description": "multipart/x-mixed-replace; boundary=frame" }, "404": error, "503": error } } },
            "/api/stream.mjpeg": { "get": { "summary": "The same at go2rtc's URL",
                "parameters": [ { "name": "src", "in": "query", "required": true, "schema": { "type": "string" } } ],
                "responses": { "200": { "description": "multipart/x-mixed-replace; boundary=frame" }, "400": error, "404": error, "503": error } } },
            "/api/cameras/{id}/hls/index.m3u8": { "parameters": id_param, "get": { "summary": "LL-HLS multivariant playlist (starts the camera's muxer; waits for its first segment)",
                "responses": { "200": { "description": "application/vnd.apple.mpegurl" }, "404": error, "503": error } } },
            "/api/cameras/{id}/hls/stream.m3u8": { "parameters": id_param, "get": { "summary": "LL-HLS media playlist with blocking reload",
                "parameters": [
                    { "name": "_HLS_msn", "in": "query", "schema": { "type": "integer" } },
                    { "name": "_HLS_part", "in": "query", "description": "needs _HLS_msn", "schema": { "type": "integer" } } ],
                "responses": { "200": { "description": "application/vnd.apple.mpegurl" }, "400": error, "404": error, "503": error } } },
            "/api/cameras/{id}/hls/{file}": { "get": { "summary": "An init segment, part or segment named by the playlist (immutable)",
                "parameters": [ { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "file", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "responses": { "200": { "description": "video/mp4" }, "404": error } } },
            "/api/stream.m3u8": { "get": { "summary": "LL-HLS at go2rtc's URL",
                "parameters": [ { "name": "src", "in": "query", "required": true, "schema": { "type": "string" } } ],
                "responses": { "200": { "description": "application/vnd.apple.mpegurl" }, "400": error, "404": error, "503": error } } },
            "/api/config/status": { "get": { "summary": "Whether the config file as it is now is applied (hot reload): ok, loaded_at, problems [{place, message}], restart_needed (sections that take effect after a restart), reloads; and the last write-back of an API change: write_back {ok, at, error} (null before the first)",
                "responses": { "200": { "description": "status" } } } },
            "/api/workers": { "get": { "summary": "The [[worker]] processes: state, reason, pid, port, starts, users",
                "responses": { "200": { "description": "workers" } } } },
            "/api/cameras": {
                "get": { "summary": "List cameras", "responses": { "200": { "description": "cameras",
                    "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Camera" } } } } } } },
                "post": { "summary": "Add a camera (and start it)",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewCamera" } } } },
                    "responses": { "201": camera, "400": error, "409": error, "413": error, "415": error, "422": error } }
            },
            "/api/cameras/{id}": {
                "parameters": id_param,
                "get": { "summary": "One camera", "responses": { "200": camera, "404": error } },
                "patch": { "summary": "Change a camera's source, options or analysis. A new source restarts only the source (viewers stay attached and resume at its first keyframe); new analysis settings restart only the analysers; a change that changes nothing does nothing",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CameraPatch" } } } },
                    "responses": { "200": camera, "400": error, "404": error, "422": error, "500": error } },
                "delete": { "summary": "Remove a camera (its viewers are ended)", "responses": { "204": { "description": "removed" }, "404": error, "500": error } }
            },
            "/api/cameras/{id}/start": { "parameters": id_param, "post": { "summary": "Start", "responses": { "200": camera, "404": error } } },
            "/api/cameras/{id}/stop": { "parameters": id_param, "post": { "summary": "Stop and wait until every resource is released", "responses": { "200": camera, "404": error } } },
            "/api/cameras/{id}/snapshot.jpg": { "parameters": id_param, "get": { "summary": "JPEG of the current picture (cached up to 1 s)",
                "responses": { "200": { "description": "JPEG", "content": { "image/jpeg": {} } }, "404": error, "503": error } } },
            "/api/cameras/stream": { "get": { "summary": "The camera list as Server-Sent Events (event: cameras), at once and every second",
                "responses": { "200": { "description": "text/event-stream" } } } },
            "/api/probe": { "post": { "summary": "What a source offers (tracks, size, first-frame time), without adding it",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["source"],
                    "properties": { "source": { "type": "string" }, "transport": { "enum": ["tcp", "udp"] }, "timeout": { "type": "string" } } } } } },
                "responses": { "200": { "description": "probe report" }, "400": error, "422": error } } },
            "/api/cameras/{id}/mse": { "parameters": id_param, "get": { "summary": "WebSocket: MSE (go2rtc's protocol): {type:mse} then init segment and fMP4 fragments",
                "parameters": [{ "name": "codecs", "in": "query", "schema": { "type": "string" }, "description": "codecs the browser plays, comma-separated" }],
                "responses": { "101": { "description": "WebSocket" }, "400": error, "404": error } } },
            "/api/ws": { "get": { "summary": "go2rtc-compatible WebSocket: {type:mse} and {type:webrtc/offer}",
                "parameters": [{ "name": "src", "in": "query", "required": true, "schema": { "type": "string" } }],
                "responses": { "101": { "description": "WebSocket" }, "400": error, "404": error } } },
            "/api/cameras/{id}/whep": { "parameters": id_param,
                "post": { "summary": "WHEP (draft-ietf-wish-whep): SDP offer in, SDP answer out",
                    "requestBody": { "required": true, "content": { "application/sdp": {} } },
                    "responses": { "201": { "description": "SDP answer; Location names the session" }, "400": error, "404": error, "409": error, "413": error, "415": error, "422": error, "503": error } },
                "options": { "summary": "Allowed methods", "responses": { "204": { "description": "Allow, Accept-Post" } } } },
            "/api/cameras/{id}/whep/{session}": {
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                               { "name": "session", "in": "path", "required": true, "schema": { "type": "string" } }],
                "delete": { "summary": "End the WebRTC session", "responses": { "200": { "description": "ended" }, "404": error } },
                "patch": { "summary": "Trickle ICE (accepted; not needed)", "responses": { "204": { "description": "accepted" }, "415": error } } },
            "/api/webrtc": { "post": { "summary": "go2rtc-compatible WebRTC offer (JSON {type,sdp} or raw SDP)",
                "parameters": [{ "name": "src", "in": "query", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "answer" }, "400": error, "404": error, "422": error } } },
            "/api/frame.jpeg": { "get": { "summary": "go2rtc-compatible snapshot",
                "parameters": [{ "name": "src", "in": "query", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "JPEG", "content": { "image/jpeg": {} } }, "400": error, "404": error, "503": error } } }
        },
        "components": {
            "responses": {
                "Error": { "description": "An error naming the problem",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": {
                    "error": { "type": "string" },
                    "problems": { "type": "array", "items": { "type": "object", "properties": {
                        "field": { "type": "string" }, "message": { "type": "string" } } } } } },
                "NewCamera": { "type": "object", "required": ["id", "source"], "additionalProperties": false, "properties": {
                    "id": { "type": "string", "pattern": "^[a-z0-9_-]{1,64}$" },
                    "source": { "type": "string", "examples": ["testsrc://?size=1280x720&fps=25", "rtsp://user:pass@host:554/path"] },
                    "on_demand": { "type": "boolean" }, "idle_timeout": { "type": "string" },
                    "analysis": { "type": "object", "description": "motion, vlm, asr settings" } } },
                "CameraPatch": { "type": "object", "additionalProperties": false, "properties": {
                    "source": { "type": "string" }, "on_demand": { "type": "boolean" }, "idle_timeout": { "type": ["string", "null"] },
                    "analysis": { "type": ["object", "null"], "description": "motion, vlm (and asr) settings; applied without a restart" } } },
                "Camera": { "type": "object", "properties": {
                    "id": { "type": "string" },
                    "source": { "type": "string", "description": "credentials masked as ***:***" },
                    "on_demand": { "type": "boolean" },
                    "idle_timeout": { "type": "string" },
                    "state": { "enum": ["stopped", "idle", "starting", "live", "retrying", "failed"] },
                    "reason": { "type": ["string", "null"] },
                    "video": { "type": ["object", "null"], "properties": {
                        "codec": { "type": "string" }, "codec_string": { "type": "string" },
                        "width": { "type": "integer" }, "height": { "type": "integer" }, "fps": { "type": ["number", "null"] } } },
                    "audio": { "type": ["object", "null"] },
                    "viewers": { "type": "integer", "description": "people watching: MSE, WebRTC and RTSP re-stream viewers" },
                    "subscribers": { "type": "object", "additionalProperties": { "type": "integer" },
                        "description": "every subscription of the stream by kind (mse, webrtc, rtsp, hls, mjpeg, snapshot, analysis, recording, transcoder); hls and transcoder are one per camera for all its players" },
                    "stats": { "type": "object", "properties": {
                        "frames": { "type": "integer" }, "bytes": { "type": "integer" },
                        "bitrate_kbps": { "type": "number" }, "fps": { "type": "number" },
                        "last_frame_age_ms": { "type": ["integer", "null"] } } } } },
                "Resources": { "type": "object", "properties": {
                    "streams_live": { "type": "integer" }, "tasks": { "type": "integer" },
                    "viewers": { "type": "object", "additionalProperties": { "type": "integer" } },
                    "peer_connections": { "type": "integer" }, "websockets": { "type": "integer" },
                    "child_processes": { "type": "integer" }, "transcoders": { "type": "integer" }, "http_connections": { "type": "integer" }, "rtsp_connections": { "type": "integer" }, "rtmp_connections": { "type": "integer" }, "publishers": { "type": "object", "properties": { "rtsp": { "type": "integer" }, "whip": { "type": "integer" }, "rtmp": { "type": "integer" } } }, "playback_downloads": { "type": "integer" }, "open_fds": { "type": "integer" }, "rss_bytes": { "type": "integer" } } }
            }
        }
    });
    // Added apart: more paths in the literal above are past `json!`'s recursion limit.
    doc["paths"]["/api/system"] = json!({ "get": { "summary": "The monitor: process CPU % (of one core, over ≥ 1 s between reads), RSS, threads; GPUs from nvidia-smi or why none; per camera state, fps, bitrate, viewers, subscribers by kind and the model's state, requests, skipped, errors and answer times (p50/p95/last over 5 minutes, the latest 60)",
        "responses": { "200": { "description": "figures" } } } });
    doc["paths"]["/api/cameras/{id}/whip"] = json!({ "parameters": id_param,
        "post": { "summary": "WHIP (RFC 9725): publish to a publish: camera; SDP offer in, SDP answer out (needs the token when one is set)",
            "requestBody": { "required": true, "content": { "application/sdp": {} } },
            "responses": { "201": { "description": "SDP answer; Location names the session" }, "400": error, "401": error, "404": error, "405": error, "409": error, "413": error, "415": error, "422": error, "503": error } },
        "options": { "summary": "Allowed methods", "responses": { "204": { "description": "Allow, Accept-Post" } } } });
    doc["paths"]["/api/cameras/{id}/whip/{session}"] = json!({
        "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                       { "name": "session", "in": "path", "required": true, "schema": { "type": "string" } }],
        "delete": { "summary": "The publisher leaves (the camera is idle at once)", "responses": { "200": { "description": "ended" }, "401": error, "404": error } },
        "patch": { "summary": "Trickle ICE (accepted; not needed)", "responses": { "204": { "description": "accepted" }, "415": error } } });
    doc["paths"]["/api/playback/list"] = json!({ "get": {
        "summary": "Recorded spans of a camera (MediaMTX's shape): contiguous footage of one codec, cut to start..end",
        "parameters": [
            { "name": "path", "in": "query", "required": true, "description": "the camera id", "schema": { "type": "string" } },
            { "name": "start", "in": "query", "schema": { "type": "string", "format": "date-time" } },
            { "name": "end", "in": "query", "schema": { "type": "string", "format": "date-time" } }],
        "responses": { "200": { "description": "[{start (RFC 3339), duration (s), url}] (empty when nothing was recorded)",
            "content": { "application/json": { "schema": { "type": "array", "items": { "type": "object", "properties": {
                "start": { "type": "string", "format": "date-time" }, "duration": { "type": "number" }, "url": { "type": "string" } } } } } } },
            "400": error } } });
    doc["paths"]["/api/playback/get"] = json!({ "get": {
        "summary": "Footage as one file (MediaMTX's shape): from the keyframe at or before start, presented from start for duration seconds; streamed; Range requests answered",
        "parameters": [
            { "name": "path", "in": "query", "required": true, "description": "the camera id", "schema": { "type": "string" } },
            { "name": "start", "in": "query", "required": true, "schema": { "type": "string", "format": "date-time" } },
            { "name": "duration", "in": "query", "required": true, "description": "seconds, at most 14400", "schema": { "type": "number" } },
            { "name": "format", "in": "query", "schema": { "enum": ["fmp4", "mp4"], "default": "fmp4" } },
            { "name": "download", "in": "query", "description": "any value: Content-Disposition attachment", "schema": { "type": "string" } }],
        "responses": { "200": { "description": "video/mp4", "content": { "video/mp4": {} } },
            "206": { "description": "the asked byte range" }, "400": error, "404": error, "416": error,
            "429": { "description": "this address has 16 downloads open (Retry-After)" },
            "503": { "description": "256 downloads are open (Retry-After)" } } } });
    doc["components"]["schemas"]["Camera"]["properties"]["record"] = json!({
        "description": "true, or {keep}: the camera is recorded ([recording])" });
    doc["components"]["schemas"]["Camera"]["properties"]["recording"] = json!({ "type": "object", "properties": {
        "state": { "enum": ["off", "waiting", "recording", "paused"] },
        "reason": { "type": ["string", "null"], "description": "why recording is paused (a full disk, a folder that cannot be written)" } } });
    doc["components"]["schemas"]["CameraPatch"]["properties"]["record"] = json!({
        "description": "true, false, {\"keep\": \"30d\"} or null; starts or stops the recorder and nothing else" });
    doc["paths"]["/api/events/search"] = json!({ "get": {
        "summary": "Full-text search (SQLite FTS5, stemmed) over descriptions, transcripts, summaries and alert answers, best match first; each result has snippet runs [{text, hit}] and a clip when recorded",
        "parameters": [
            { "name": "q", "in": "query", "required": true, "description": "words, all required; the last also as a prefix", "schema": { "type": "string" } },
            { "name": "camera", "in": "query", "schema": { "type": "string" } },
            { "name": "since", "in": "query", "description": "ms since the epoch", "schema": { "type": "integer" } },
            { "name": "until", "in": "query", "schema": { "type": "integer" } },
            { "name": "limit", "in": "query", "schema": { "type": "integer", "default": 50 } }],
        "responses": { "200": { "description": "events with snippet and clip" }, "400": error, "401": error } } });
    doc["paths"]["/api/cameras/{id}/summary"] = json!({ "parameters": id_param, "post": {
        "summary": "Summarise the camera's descriptions, alerts and transcripts of a period (text only, with the summary model or the vlm one); stored as a summary event",
        "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": {
            "since": { "type": "integer" }, "until": { "type": "integer" } } } } } },
        "responses": { "201": { "description": "the summary event" }, "400": error, "401": error, "404": error, "422": error, "502": error } } });
    doc["paths"]["/api/cameras/{id}/analysis/test"] = json!({ "parameters": id_param, "post": {
        "summary": "Try model settings (not saved) on the camera's picture now: {vlm: {...}, question?} → {ok, answer, latency_ms}; a masked api_key is the saved one",
        "responses": { "200": { "description": "the model's answer" }, "401": error, "404": error, "422": error, "502": error, "503": error } } });
    doc["paths"]["/api/outputs"] = json!({ "get": {
        "summary": "Where the outputs outside this HTTP server listen: the RTSP re-stream (rtsp://HOST:PORT/{camera}), or null when it is off",
        "responses": { "200": outputs } } });
    doc
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_path_is_documented_as_an_object() {
        let spec = super::spec();
        let paths = spec["paths"].as_object().unwrap();
        for path in [
            "/api/cameras/{id}/snapshot.jpg",
            "/api/cameras/{id}/mse",
            "/api/cameras/{id}/whep",
            "/api/cameras/{id}/whep/{session}",
            "/api/cameras/{id}/whip",
            "/api/cameras/{id}/whip/{session}",
            "/api/webrtc",
            "/api/ws",
            "/api/probe",
            "/api/cameras/stream",
            "/api/workers",
            "/api/outputs",
            "/api/playback/list",
            "/api/events/search",
            "/api/cameras/{id}/summary",
            "/api/cameras/{id}/analysis/test",
            "/api/playback/get",
            "/api/events",
            "/api/events/{id}/snapshot.jpg",
            "/api/events/stream",
        ] {
            assert!(paths.contains_key(path), "{path} is not documented");
        }
        assert!(paths.values().all(|v| v.is_object()));
    }
}
