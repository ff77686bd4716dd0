//! The verified caller, made visible to an open host: AgentOS's run routes
//! take `user_id` (and the session id claim) from a verified JWT over the
//! form's fields (`request.state.user_id` in
//! `agno/os/routers/workflows/router.py`). A host behind the gateway
//! verifies nothing, so the gateway appends `user_id=<sub>` (and
//! `session_id=<claim>`) to a run's urlencoded form: Starlette keeps the
//! last value of a repeated field, so the verified one wins.
//!
//! The fields are appended as the body streams (nothing is buffered); a
//! declared `Content-Length` grows by their size. A multipart run body is
//! forwarded unchanged: see the README (Auth) for why and what to do.

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
    let urlencoded = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/x-www-form-urlencoded")
        });
    if !urlencoded {
        return;
    }
    let mut fields = url::form_urlencoded::Serializer::new(String::new());
    if let Some(user_id) = &identity.user_id {
        fields.append_pair("user_id", user_id);
    }
    if let Some(session_id) = &identity.session_id {
        fields.append_pair("session_id", session_id);
    }
    let fields = Bytes::from(fields.finish());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared {
        // `&` plus the fields, or the fields alone after an empty body.
        let grown = len + fields.len() as u64 + u64::from(len > 0);
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(grown));
    }
    let body = std::mem::take(request.body_mut());
    *request.body_mut() = Body::new(Appended {
        inner: body,
        fields: Some(fields),
        seen: false,
    });
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
}
