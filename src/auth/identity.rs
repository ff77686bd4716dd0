//! The verified caller, made visible to an open host: AgentOS's run routes
//! take `user_id` (and the session id claim) from a verified JWT over the
//! form's fields (`request.state.user_id` in
//! `agno/os/routers/workflows/router.py`). A host behind the gateway
//! verifies nothing, so the gateway appends `user_id=<sub>` (and
//! `session_id=<claim>`) to a run's urlencoded form: Starlette keeps the
//! last value of a repeated field, so the verified one wins.
//!
//! The fields are appended as the body streams (nothing is buffered); a
//! declared `Content-Length` grows by their size. A multipart run body
//! gets the same fields as parts inserted before its closing delimiter:
//! only a short tail is held back to find it, and a body whose closing
//! delimiter is not within that tail is cut off (the host then refuses an
//! unfinished form) rather than sent on with the caller's own `user_id`.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use http::{HeaderValue, Method, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Who a verified token says the caller is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Option<String>,
    pub session_id: Option<String>,
}

/// Appends the identity's fields to a run's urlencoded form.
pub fn apply(identity: &Identity, request: &mut Request) {
    if identity.user_id.is_none() && identity.session_id.is_none() {
        return;
    }
    if request.method() != Method::POST || !is_run(request.uri().path()) {
        return;
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let pairs = [
        ("user_id", &identity.user_id),
        ("session_id", &identity.session_id),
    ];
    let body = std::mem::take(request.body_mut());
    let (body, added) = if content_type.starts_with("application/x-www-form-urlencoded") {
        let mut fields = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            if let Some(value) = value {
                fields.append_pair(name, value);
            }
        }
        let fields = Bytes::from(fields.finish());
        // `&` plus the fields, or the fields alone after an empty body.
        let added = fields.len() as u64 + u64::from(declared.is_some_and(|l| l > 0));
        let body = Body::new(Appended {
            inner: body,
            fields: Some(fields),
            seen: false,
        });
        (body, added)
    } else if let Some(boundary) = multipart_boundary(&content_type) {
        let mut parts = Vec::new();
        for (name, value) in pairs {
            if let Some(value) = value {
                // A quote or line break would end the part early; the
                // value goes as is otherwise, as a browser sends it.
                let value = value.replace(['\r', '\n'], " ");
                parts.extend_from_slice(
                    format!(
                        "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}"
                    )
                    .as_bytes(),
                );
            }
        }
        let added = parts.len() as u64;
        let body = Body::new(Multipart {
            inner: body,
            close: format!("\r\n--{boundary}--").into_bytes(),
            parts: Some(Bytes::from(parts)),
            held: Vec::new(),
        });
        (body, added)
    } else {
        *request.body_mut() = body;
        return;
    };
    if let Some(len) = declared {
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len + added));
    }
    *request.body_mut() = body;
}

/// The `boundary` of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// Bytes held back from a multipart body: room for the closing delimiter
/// and a short epilogue after it.
const MULTIPART_TAIL: usize = 1024;

pin_project! {
    /// A multipart body with parts inserted before its closing delimiter.
    struct Multipart {
        #[pin]
        inner: Body,
        close: Vec<u8>,
        parts: Option<Bytes>,
        held: Vec<u8>,
    }
}

impl HttpBody for Multipart {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        loop {
            let Some(parts) = this.parts.as_ref() else {
                return Poll::Ready(None);
            };
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.held.extend_from_slice(&data);
                    let keep = this.close.len() + MULTIPART_TAIL;
                    if this.held.len() > keep {
                        let out: Vec<u8> = this.held.drain(..this.held.len() - keep).collect();
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(None) => {
                    let at = this
                        .held
                        .windows(this.close.len())
                        .rposition(|w| w == this.close.as_slice());
                    let Some(at) = at else {
                        this.parts.take();
                        return Poll::Ready(Some(Err(axum::Error::new(
                            "multipart body: no closing delimiter near its end",
                        ))));
                    };
                    let mut out = Vec::with_capacity(this.held.len() + parts.len());
                    out.extend_from_slice(&this.held[..at]);
                    out.extend_from_slice(parts);
                    out.extend_from_slice(&this.held[at..]);
                    this.parts.take();
                    this.held.clear();
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(parts) = &self.parts {
            let extra = parts.len() as u64;
            hint = match hint.exact() {
                Some(n) => SizeHint::with_exact(n + extra),
                None => SizeHint::new(),
            };
        }
        hint
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_none()
    }
}

/// `/{workflows,agents,teams}/{id}/runs` and `.../runs/{run_id}/continue`.
fn is_run(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        segments[..],
        [family, _, "runs"] | [family, _, "runs", _, "continue"]
            if matches!(family, "workflows" | "agents" | "teams")
    )
}

pin_project! {
    /// A body with form fields after its end.
    struct Appended {
        #[pin]
        inner: Body,
        fields: Option<Bytes>,
        seen: bool,
    }
}

impl HttpBody for Appended {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        if this.fields.is_none() {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if frame.data_ref().is_some_and(|d| !d.is_empty()) {
                    *this.seen = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                let fields = this.fields.take().unwrap_or_default();
                let data = if *this.seen {
                    let mut joined = Vec::with_capacity(fields.len() + 1);
                    joined.push(b'&');
                    joined.extend_from_slice(&fields);
                    Bytes::from(joined)
                } else {
                    fields
                };
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(fields) = &self.fields {
            let extra = fields.len() as u64 + 1;
            hint = match hint.exact() {
                // Exact only when the inner size says whether `&` is needed.
                Some(0) => SizeHint::with_exact(fields.len() as u64),
                Some(n) => SizeHint::with_exact(n + extra),
                None => {
                    let mut h = SizeHint::new();
                    h.set_lower(hint.lower() + fields.len() as u64);
                    if let Some(upper) = hint.upper() {
                        h.set_upper(upper + extra);
                    }
                    h
                }
            };
        }
        hint
    }

    fn is_end_stream(&self) -> bool {
        self.fields.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn forwarded(body: &'static str, id: &Identity) -> (String, Option<String>) {
        let mut request = http::Request::builder()
            .method("POST")
            .uri("/workflows/w/runs")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", body.len())
            .body(Body::from(body))
            .unwrap();
        apply(id, &mut request);
        let len = request
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        (String::from_utf8(bytes.to_vec()).unwrap(), len)
    }

    #[tokio::test]
    async fn the_verified_user_is_the_last_user_id() {
        let id = Identity {
            user_id: Some("alice@x".into()),
            session_id: None,
        };
        let (body, len) = forwarded("message=hi&user_id=mallory", &id).await;
        assert_eq!(body, "message=hi&user_id=mallory&user_id=alice%40x");
        assert_eq!(len, Some(body.len().to_string()));
        let (body, len) = forwarded("", &id).await;
        assert_eq!(body, "user_id=alice%40x");
        assert_eq!(len, Some(body.len().to_string()));
        let both = Identity {
            user_id: Some("u".into()),
            session_id: Some("s".into()),
        };
        assert_eq!(
            forwarded("m=1", &both).await.0,
            "m=1&user_id=u&session_id=s"
        );
    }

    #[tokio::test]
    async fn multipart_gets_the_verified_user_as_its_last_part() {
        let body =
            "--B\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nmallory\r\n--B--\r\n";
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut request = http::Request::builder()
            .method("POST")
            .uri("/agents/a/runs")
            .header("content-type", "multipart/form-data; boundary=\"B\"")
            .header("content-length", body.len())
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
        let id = Identity {
            user_id: Some("alice".into()),
            session_id: None,
        };
        apply(&id, &mut request);
        let len: usize = request.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        let sent = String::from_utf8(bytes.to_vec()).unwrap();
        assert_eq!(
            sent,
            "--B\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nmallory\r\n--B\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nalice\r\n--B--\r\n"
        );
        assert_eq!(len, sent.len());

        let mut unclosed = http::Request::builder()
            .method("POST")
            .uri("/workflows/w/runs")
            .header("content-type", "multipart/form-data; boundary=B")
            .body(Body::from(
                "--B\r\nContent-Disposition: form-data; name=\"m\"\r\n\r\nx",
            ))
            .unwrap();
        apply(&id, &mut unclosed);
        assert!(
            unclosed.into_body().collect().await.is_err(),
            "cut off, never sent as is"
        );
    }
}
