//! The daemon's HTTP API: JSON over HTTP/1.1 on axum (docs/api.md has a curl example per
//! endpoint).
//!
//! - `POST /torrents` — body: a magnet link, an info-hash, an http(s) URL of a .torrent, or
//!   the .torrent itself → `{"id", "infohash"}`;
//! - `GET /torrents` → `{"torrents": [...]}`; `GET /torrents/{id}` (id or info-hash);
//! - `POST /torrents/{id}/pause`, `POST /torrents/{id}/resume`;
//! - `PATCH /torrents/{id}`: its settings (files, sequential, rates, seed ratio and time);
//! - `DELETE /torrents/{id}` (`?delete_files=true` also deletes the data);
//! - `GET /torrents/{id}/files`, `GET /torrents/{id}/pieces` (the verified bitfield),
//!   `GET /torrents/{id}/peers`, `GET /torrents/{id}/trackers`, `GET /dht`,
//!   `GET /torrents/{id}/stream/{file}` (with `Range`);
//! - `GET /events`: Server-Sent Events (`state`, `removed`, `progress`);
//! - `POST /torrents/{id}/queue` (`{"position": N}`): its place in the queue;
//! - `GET /session` (listening address, DHT, queue limits), `PATCH /session` (the queue
//!   limits); `GET /metrics` (Prometheus text);
//! - `GET /`: the web UI (`ui.html`, built into the binary).
//!
//! Safety: bodies are bounded ([`MAX_BODY`]); with a token every request must carry it
//! (`Authorization: Bearer TOKEN`, or basic auth with the token as password) — the CLI
//! refuses a non-loopback address without one; no CORS headers are sent, so a web page on
//! another origin cannot read the answers; nothing here takes a path from the client.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::input::{parse_input, Input};
use super::{metrics, Daemon, DaemonError};
use crate::metainfo::{Metainfo, MAX_TORRENT_SIZE};
use crate::session::Source;

/// Largest request body: a .torrent at most.
pub const MAX_BODY: usize = MAX_TORRENT_SIZE;
/// A .torrent URL given to `POST /torrents` is fetched within this, following redirects.
const URL_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 5;

#[derive(Clone)]
struct Ctx {
    daemon: Arc<Daemon>,
    token: Option<Arc<str>>,
}

/// The API's routes over `daemon`; with `token`, every request must carry it.
pub fn router(daemon: Arc<Daemon>, token: Option<String>) -> Router {
    let ctx = Ctx {
        daemon,
        token: token.map(Into::into),
    };
    Router::new()
        .route("/", get(ui))
        .route("/torrents", get(list).post(add))
        .route("/torrents/{id}", get(one).delete(remove).patch(settings))
        .route("/torrents/{id}/pause", post(pause))
        .route("/torrents/{id}/resume", post(resume))
        .route("/torrents/{id}/queue", post(queue_move))
        .route("/torrents/{id}/files", get(files))
        .route("/torrents/{id}/pieces", get(pieces))
        .route("/torrents/{id}/peers", get(peers))
        .route("/torrents/{id}/trackers", get(trackers))
        .route("/dht", get(dht))
        .route("/torrents/{id}/stream/{file}", get(stream))
        .route("/events", get(events))
        .route("/session", get(session).patch(session_settings))
        .route("/metrics", get(metrics_page))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": msg.to_string() }))).into_response()
}

impl IntoResponse for DaemonError {
    fn into_response(self) -> Response {
        let status = match &self {
            DaemonError::NotFound(_) => StatusCode::NOT_FOUND,
            DaemonError::Input(_) => StatusCode::BAD_REQUEST,
            DaemonError::Refused(_) => StatusCode::CONFLICT,
            DaemonError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self)
    }
}

/// Byte-wise comparison that does not stop at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Does `headers` carry `token` (bearer, or basic auth with it as the password)?
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(t) = v.strip_prefix("Bearer ") {
        return same(t.trim().as_bytes(), token.as_bytes());
    }
    if let Some(b) = v.strip_prefix("Basic ") {
        let Some(raw) = base64_decode(b.trim()) else {
            return false;
        };
        return match raw.iter().position(|&c| c == b':') {
            Some(i) => same(&raw[i + 1..], token.as_bytes()),
            None => false,
        };
    }
    false
}

/// Standard base64 with padding (RFC 4648), as basic auth sends it; `None` if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(4) || s.len() > 4096 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// Every request: the token first, then a declared body length over [`MAX_BODY`] is
/// refused before any of the body is read (the extractor's own limit only counts bytes as
/// they arrive).
async fn guard(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    if let Some(t) = &ctx.token {
        if !authorized(req.headers(), t) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"magnetfetch\""),
            );
            return r;
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY} bytes"),
        );
    }
    next.run(req).await
}

/// The web UI: one page, its script and style inline, built into the binary (no
/// JavaScript toolchain). It drives the same API, with live updates from `/events`.
const UI: &str = include_str!("ui.html");

async fn ui() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        UI,
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn list(State(ctx): State<Ctx>) -> Response {
    Json(json!({ "torrents": ctx.daemon.list() })).into_response()
}

async fn one(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match ctx.daemon.get(&id) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn add(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let input = match parse_input(&body) {
        Ok(i) => i,
        Err(e) => return DaemonError::Input(e).into_response(),
    };
    let (source, raw, magnet) = match input {
        Input::Url(url) => {
            let bytes = match crate::http::client::get_following_redirects(
                ctx.daemon.session().net(),
                &url,
                MAX_TORRENT_SIZE,
                URL_TIMEOUT,
                MAX_REDIRECTS,
            )
            .await
            {
                Ok(b) => b,
                Err(e) => return error(StatusCode::BAD_GATEWAY, e),
            };
            match Metainfo::from_bytes(&bytes) {
                Ok(m) => (Source::Metainfo(Arc::new(m)), Some(bytes), None),
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("{url}: not a valid .torrent: {e}"),
                    )
                }
            }
        }
        Input::Magnet(m, text) => (Source::Magnet(m), None, Some(text)),
        Input::Torrent(m, raw) => (Source::Metainfo(m), Some(raw), None),
    };
    match ctx.daemon.add(source, raw.as_deref(), magnet).await {
        Ok((id, ih)) => Json(json!({ "id": id, "infohash": ih.to_hex() })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn settings(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    body: Result<Json<super::Settings>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(s) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match ctx.daemon.set_settings(&id, s).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn pause(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match ctx.daemon.pause(&id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn resume(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match ctx.daemon.resume(&id) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueMove {
    position: usize,
}

/// A JSON body, whatever `Content-Type` says (`curl --data` sends a form type).
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))
}

async fn queue_move(State(ctx): State<Ctx>, Path(id): Path<String>, body: Bytes) -> Response {
    let m: QueueMove = match json_body(&body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match ctx.daemon.move_in_queue(&id, m.position) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PATCH /session`: `max_active_downloads` and `max_active_seeds`, each a count or `null`
/// (no limit); a field not given keeps its value. Answers what `GET /session` does.
async fn session_settings(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let m: serde_json::Map<String, serde_json::Value> = match json_body(&body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut q = ctx.daemon.queue_limits();
    for (k, v) in &m {
        let n = match v {
            serde_json::Value::Null => None,
            v => match v.as_u64() {
                Some(n) => Some(n as usize),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("{k}: a count (0 or more) or null"),
                    )
                }
            },
        };
        match k.as_str() {
            "max_active_downloads" => q.max_active_downloads = n,
            "max_active_seeds" => q.max_active_seeds = n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown field {k:?}: max_active_downloads, max_active_seeds"),
                )
            }
        }
    }
    ctx.daemon.set_queue_limits(q);
    session(State(ctx)).await
}

async fn files(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match ctx.daemon.files(&id) {
        Ok(f) => Json(json!({ "files": f })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn pieces(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match ctx.daemon.pieces(&id) {
        Ok(Some((count, have))) => Json(json!({ "pieces": count, "have": have })).into_response(),
        Ok(None) => Json(json!({ "pieces": null, "have": null })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A magnet's metadata is waited for this long by a stream request.
const STREAM_METADATA_WAIT: Duration = Duration::from_secs(60);

async fn stream(
    State(ctx): State<Ctx>,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(file) = file.parse::<usize>() else {
        return error(
            StatusCode::NOT_FOUND,
            "files are numbered: /stream/0, /stream/1...",
        );
    };
    let (src, ty) = match ctx
        .daemon
        .stream_source(&id, file, STREAM_METADATA_WAIT)
        .await
    {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let len = src.span.len;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, part) = match super::stream::parse_range(range, len) {
        super::stream::Wanted::All => (StatusCode::OK, (len > 0).then(|| 0..=len - 1)),
        super::stream::Wanted::Part(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        super::stream::Wanted::Unsatisfiable => {
            let mut r = error(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = header::HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let (body, length) = match &part {
        Some(r) => {
            let rx = super::stream::spawn_reader(src, r.clone());
            (
                axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
                r.end() - r.start() + 1,
            )
        }
        None => (axum::body::Body::empty(), 0),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ty));
    h.insert(header::CONTENT_LENGTH, length.into());
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("sandbox"),
    );
    if let (StatusCode::PARTIAL_CONTENT, Some(r)) = (status, &part) {
        if let Ok(v) =
            header::HeaderValue::from_str(&format!("bytes {}-{}/{len}", r.start(), r.end()))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    delete_files: bool,
}

async fn remove(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    q: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad query: use ?delete_files=true or false",
        );
    };
    match ctx.daemon.remove(&id, q.delete_files).await {
        Ok(()) => Json(json!({ "removed": id, "deleted_files": q.delete_files })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// How often `/events` looks at the torrents; progress goes out every second tick.
const EVENTS_EVERY: Duration = Duration::from_millis(500);

/// `GET /events`: Server-Sent Events. At once and on every change a `state` event
/// (`{"id", "infohash", "state"}`), `removed` (`{"id"}`) when a torrent goes, and every
/// second a `progress` event per torrent (the object `GET /torrents/{id}` answers).
async fn events(State(ctx): State<Ctx>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio_stream::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let daemon = ctx.daemon.clone();
    tokio::spawn(async move {
        let mut last: std::collections::BTreeMap<u64, super::State> = Default::default();
        let mut tick = tokio::time::interval(EVENTS_EVERY);
        for n in 0u64.. {
            tick.tick().await;
            let list = daemon.list();
            let mut out = Vec::new();
            for t in &list {
                if last.insert(t.id, t.state) != Some(t.state) {
                    let v = json!({"id": t.id, "infohash": t.infohash, "state": t.state});
                    out.push(Event::default().event("state").json_data(v));
                }
            }
            last.retain(|id, _| {
                let kept = list.iter().any(|t| t.id == *id);
                if !kept {
                    out.push(
                        Event::default()
                            .event("removed")
                            .json_data(json!({"id": id})),
                    );
                }
                kept
            });
            if n % 2 == 0 {
                for t in &list {
                    out.push(Event::default().event("progress").json_data(t));
                }
            }
            for ev in out.into_iter().flatten() {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    let stream =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The DHT node's state as JSON (`null` without one).
async fn dht_json(ctx: &Ctx) -> serde_json::Value {
    match ctx.daemon.session().dht() {
        Some(d) => {
            let st = d.stats().await;
            json!({
                "nodes": st.table_size,
                "nodes_v4": st.table_v4,
                "nodes_v6": st.table_v6,
                "queries_sent": st.queries_sent,
                "responses": st.responses,
                "timeouts": st.timeouts,
                "queries_received": st.queries_received,
                "queries_dropped": st.queries_dropped,
                "lookups": st.lookups_done,
                "peers_stored": st.peers_stored,
                "external_addr": st.external_addr,
            })
        }
        None => serde_json::Value::Null,
    }
}

/// `GET /dht`: `{"dht": ...}`, `null` with `--no-dht`.
async fn dht(State(ctx): State<Ctx>) -> Response {
    Json(json!({ "dht": dht_json(&ctx).await })).into_response()
}

async fn peers(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match ctx.daemon.peers(&id).await {
        Ok(p) => Json(json!({ "peers": p })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn trackers(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match ctx.daemon.trackers(&id) {
        Ok(t) => Json(json!({ "trackers": t })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn session(State(ctx): State<Ctx>) -> Response {
    let s = ctx.daemon.session();
    let dht = dht_json(&ctx).await;
    Json(json!({
        "peer_id": s.peer_id().to_hex(),
        "listen_addr": s.listen_addr(),
        "listen_addr6": s.listen_addr6(),
        "torrents": ctx.daemon.list().len(),
        "queue": ctx.daemon.queue_limits(),
        "dht": dht,
        "port_mapping": ctx.daemon.port_mapping(),
    }))
    .into_response()
}

async fn metrics_page(State(ctx): State<Ctx>) -> Response {
    let dht = match ctx.daemon.session().dht() {
        Some(d) => Some(d.stats().await),
        None => None,
    };
    let peers = ctx.daemon.peer_counts().await;
    let page = metrics::render(
        &ctx.daemon.list(),
        dht.as_ref(),
        &ctx.daemon.totals(),
        &peers,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_as_bearer_or_basic_password() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&h, "s3cre"));
        // "any:s3cret"
        h.insert(
            header::AUTHORIZATION,
            "Basic YW55OnMzY3JldA==".parse().unwrap(),
        );
        assert!(authorized(&h, "s3cret"));
        h.insert(
            header::AUTHORIZATION,
            "Basic YW55OnMzY3JldA=".parse().unwrap(),
        );
        assert!(!authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Basic !!!!".parse().unwrap());
        assert!(!authorized(&h, "s3cret"));
        assert_eq!(base64_decode("YW55OnMzY3JldA==").unwrap(), b"any:s3cret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("Y===").is_none());
    }
}
