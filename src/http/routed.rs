//! Paths no API route serves go to the routes file's routes, in this
//! order: SSE streams (`streams:`), cached reads (`cached:`, `GET` and
//! `HEAD` only, so a path can be read there and written by a one-way
//! route), one-way produce (`produce:`), then request-reply (`routes:` and
//! the header route). Nothing matches: 404.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use axum::http::Method;

use super::Sidecar;
use crate::rr::cached_routes::find_cached;
use crate::rr::produce_routes::find_produce;
use crate::rr::stream_routes::find_stream;

pub async fn dispatch(State(sidecar): State<Arc<Sidecar>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if let Some(streams) = sidecar.streams.clone() {
        if let Some(target) = find_stream(&streams.routes, &path) {
            let (parts, _) = request.into_parts();
            return streams
                .handle(&sidecar, target, &parts.method, &parts.headers)
                .await
                .into_response();
        }
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if let Some(cached) = sidecar.cached.as_ref().filter(|_| reads) {
        if let Some(target) = find_cached(&cached.routes, &path) {
            let (parts, _) = request.into_parts();
            return cached
                .handle(&sidecar, target, &parts.method, &parts.headers)
                .await
                .into_response();
        }
    }
    if let Some(one_way) = &sidecar.one_way {
        if let Some(target) = find_produce(&one_way.routes, request.method(), &path) {
            let (parts, body) = request.into_parts();
            return one_way
                .handle(&sidecar, target, &parts.method, &parts.headers, body)
                .await
                .into_response();
        }
    }
    super::request_reply::call(State(sidecar), request).await
}
