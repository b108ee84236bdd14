//! The optional HTTP listener: `/health` (200 only when UP-ready, for
//! cloud load balancers), `/metrics` (Prometheus text format), and the
//! read-only status page at `/` with its `/status.json`.

use crate::control::Node;
use anyhow::{Context, Result};
use herd_control::status::Readiness;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use tokio::net::TcpListener;

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("control.http: binding {addr}"))?;
    tracing::info!(%addr, "HTTP listener ready (/health, /metrics)");
    Ok(l)
}

pub async fn serve(listener: TcpListener, node: Node) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let node = node.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&node, &req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!("http connection: {e}");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn respond<B>(node: &Node, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/health" => {
            let s = node.health.snapshot();
            // A draining node serves its connections but takes no new
            // flows: a load balancer in front must stop sending it some.
            let readiness = node.readiness(&s);
            let body = format!("{} ({readiness})\n", s.state);
            let status = if s.owns_buckets && readiness != Readiness::Draining {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, "text/plain", body)
        }
        "/" => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            herd_control::page::HTML.to_string(),
        ),
        "/status.json" => match serde_json::to_string(&node.report()) {
            Ok(body) => text(StatusCode::OK, "application/json", body),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/metrics" => match crate::metrics::render(&node.report()) {
            Ok(body) => text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /, /status.json, /health or /metrics\n".into(),
        ),
    }
}
