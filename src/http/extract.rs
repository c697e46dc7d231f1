//! Extractors whose rejections are problem+json instead of axum's plain text.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// `axum::Json` with RFC 9457 rejections: 400 bad syntax, 422 wrong shape, 415, 413.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(format!("invalid JSON: {}", e.body_text())),
                JsonRejection::JsonDataError(e) => ApiError::unprocessable(e.body_text()),
                JsonRejection::MissingJsonContentType(_) => {
                    ApiError::unsupported_media_type("send the body as Content-Type: application/json")
                }
                JsonRejection::BytesRejection(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::payload_too_large("the JSON body exceeds MAX_JSON_BODY_BYTES")
                }
                other => ApiError::bad_request(other.body_text()),
            }),
        }
    }
}
