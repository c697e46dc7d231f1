//! Response compression only for requests that ask for it. tower-http's layer wraps every
//! response body, even when the client sent no `Accept-Encoding` and nothing will be
//! compressed; that wrapper costs a few µs per request. Requests without the header skip it.

use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, Request, Response};
use futures::future::{Either, MapOk, TryFutureExt};
use tower::{Layer, Service};
use tower_http::compression::predicate::Predicate;
use tower_http::compression::{Compression, CompressionBody, CompressionLayer};

#[derive(Clone)]
pub struct NegotiatedCompressionLayer<P> {
    inner: CompressionLayer<P>,
}

impl<P: Predicate> NegotiatedCompressionLayer<P> {
    pub fn new(predicate: P) -> Self {
        Self { inner: CompressionLayer::new().compress_when(predicate) }
    }
}

impl<S: Clone, P: Predicate> Layer<S> for NegotiatedCompressionLayer<P> {
    type Service = NegotiatedCompression<S, P>;
    fn layer(&self, inner: S) -> Self::Service {
        NegotiatedCompression { compressed: self.inner.layer(inner.clone()), plain: inner }
    }
}

#[derive(Clone)]
pub struct NegotiatedCompression<S, P> {
    compressed: Compression<S, P>,
    plain: S,
}

type Boxed = fn(Response<CompressionBody<Body>>) -> Response<Body>;

impl<S, P> Service<Request<Body>> for NegotiatedCompression<S, P>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    P: Predicate,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<MapOk<<Compression<S, P> as Service<Request<Body>>>::Future, Boxed>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both are clones of one service (axum's routes are always ready): whichever `call`
        // uses has been polled.
        match self.plain.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.compressed.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.headers().contains_key(header::ACCEPT_ENCODING) {
            Either::Left(self.compressed.call(req).map_ok((|r| r.map(Body::new)) as Boxed))
        } else {
            Either::Right(self.plain.call(req))
        }
    }
}
