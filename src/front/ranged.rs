//! A range request answered from an upstream answer that is not stored: a 206 of the client's
//! own request is relayed, a whole 200 is cut to the client's range here (If-Range and the
//! preconditions judged against it), and a fill's unstorable answer to a range far into the
//! body is dropped for a ranged request of the client's own; a member's stored copy answers
//! like a stored entry would. The rules are `fetch::ranges::plan`'s.

use std::sync::Arc;

use std::time::SystemTime;

use http::{header, HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::cache::conditional;
use crate::error::Error;
use crate::fetch::content_length;
use crate::fetch::ranges::plan::{self, Unstored};
use crate::fetch::ranges::PeerSpan;
use crate::front::answer;
use crate::front::forward::{relay, Ask};
use crate::front::Proxy;
use crate::metrics::Metrics;

/// The client's answer from `resp`, an answer that is not stored (`passed`: to the client's
/// own request), and the status upstream gave.
pub async fn unstored(
    app: &Arc<Proxy>,
    ask: &Ask<'_>,
    resp: Response<Incoming>,
    passed: bool,
) -> Result<(Response<Body>, StatusCode), Error> {
    let first = conditional::first_byte(ask.method, ask.headers);
    let len = content_length(resp.headers());
    let resp = match plan::unstored(first, passed, resp.status(), len) {
        Unstored::Relay => resp,
        Unstored::Cut => return Ok(cut(app, ask, resp)),
        Unstored::AskRanged => {
            drop(resp);
            Metrics::inc(&app.metrics.ranges_unfilled);
            let (method, uri, version) = (Method::GET, ask.target, ask.version);
            let again = app
                .fetcher
                .pass(method, uri, ask.headers, version, body::empty())
                .await?;
            let len = content_length(again.headers());
            match plan::unstored(first, true, again.status(), len) {
                Unstored::Cut => return Ok(cut(app, ask, again)),
                _ => again,
            }
        }
    };
    let status = resp.status();
    Ok((relay(app, ask.method, resp), status))
}

/// The client's range from a member's stored copy, as if this cache held it (with its Age).
pub fn from_peer(span: PeerSpan) -> Response<Body> {
    let mut headers = span.head.headers();
    let age = span.head.timing.current_age(SystemTime::now());
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    answer::partial(headers, span.start, span.end, span.len, span.body)
}

/// The client's range of a whole 200, relayed as it streams (a 200 of unknown length is relayed
/// whole: RFC 9110 §14.2 lets a server ignore Range).
fn cut(app: &Arc<Proxy>, ask: &Ask<'_>, resp: Response<Incoming>) -> (Response<Body>, StatusCode) {
    let status = resp.status();
    let len = content_length(resp.headers());
    let (parts, body) = relay(app, ask.method, resp).into_parts();
    let Some(len) = len else {
        return (Response::from_parts(parts, body), status);
    };
    let answer = answer::from_whole(
        ask.method,
        ask.headers,
        parts.status,
        parts.headers,
        len,
        body,
    );
    (answer, status)
}
