//! One flat JSON object per line: the request's ids (from `telemetry::context`) and the fields
//! of every enclosing span (a job's) are merged into the event, so `trace_id` and `request_id`
//! sit at the top level of every line logged inside a request or a job, where log shippers and
//! `jq .trace_id` find them.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

pub struct FlatJson;

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().to_string(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_string(), Value::from(format!("{value:?}")));
    }
}

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut map = Map::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        map.insert("timestamp".into(), Value::from(now));
        map.insert("level".into(), Value::from(event.metadata().level().as_str()));
        super::context::with_current(|c| {
            map.insert("trace_id".into(), Value::from(c.trace_id.as_str()));
            map.insert("request_id".into(), Value::from(c.request_id.as_str()));
            map.insert("method".into(), Value::from(c.method.as_str()));
            map.insert("route".into(), Value::from(&*c.route));
        });
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<JsonFields>>() {
                    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(fields.as_str()) {
                        map.extend(obj);
                    }
                }
            }
        }
        event.record(&mut Fields(&mut map));
        map.insert("target".into(), Value::from(event.metadata().target()));
        writeln!(writer, "{}", Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, OnceLock};

    use tracing_subscriber::fmt::{self, format::JsonFields};
    use tracing_subscriber::prelude::*;

    use super::FlatJson;
    use crate::telemetry::context::{RequestContext, CURRENT};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(buf: &Buf) -> Vec<serde_json::Value> {
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn lines_logged_inside_a_request_or_a_job_carry_its_ids_at_the_top_level() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer().fmt_fields(JsonFields::new()).event_format(FlatJson).with_writer(move || writer.clone()),
        );
        let _guard = tracing::subscriber::set_default(subscriber);

        let ctx = Arc::new(RequestContext {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            request_id: "req-1".into(),
            method: http::Method::POST,
            route: "/api/v1/jobs".into(),
            uri: http::Uri::from_static("/api/v1/jobs"),
            client_ip: [192, 0, 2, 1].into(),
            user: OnceLock::new(),
        });
        CURRENT.scope(ctx, async { tracing::warn!(detail = "x", "inside a request") }).await;
        tracing::info_span!("job", job_id = "j-1", trace_id = "aaaa").in_scope(|| tracing::info!("inside a job"));
        tracing::info!("outside");

        let l = lines(&buf);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(l[0]["request_id"], "req-1");
        assert_eq!(l[0]["method"], "POST");
        assert_eq!(l[0]["route"], "/api/v1/jobs");
        assert_eq!(l[0]["detail"], "x");
        assert_eq!(l[0]["level"], "WARN");
        assert_eq!(l[1]["job_id"], "j-1");
        assert_eq!(l[1]["trace_id"], "aaaa");
        assert!(l[2].get("trace_id").is_none(), "no ids outside a request: {}", l[2]);
    }
}
