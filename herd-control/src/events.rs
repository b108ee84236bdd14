//! The node's recent events for `herd status` and the status page: the
//! last [`KEPT`] log lines at INFO or above (a view change, a failover, a
//! checker going down, a drain…), captured by a tracing layer beside the
//! log's own, so that whatever the node says in its log is what the page
//! shows, with no second list of event kinds to keep in step.

use crate::status::RecentEvent;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// How many events are kept.
pub const KEPT: usize = 50;

/// The recent events, newest last.
#[derive(Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<VecDeque<RecentEvent>>>,
}

impl EventLog {
    pub fn recent(&self) -> Vec<RecentEvent> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().cloned().collect()
    }

    fn push(&self, e: RecentEvent) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == KEPT {
            events.pop_front();
        }
        events.push_back(e);
    }

    /// The tracing layer that fills this log.
    pub fn layer(&self) -> EventLayer {
        EventLayer(self.clone())
    }
}

pub struct EventLayer(EventLog);

/// Formats an event's message, then its fields as `name=value`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for EventLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::INFO {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.0.push(RecentEvent {
            unix_ms,
            level: level.to_string(),
            message: format!("{}{}", line.message, line.fields),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_the_last_info_and_above_with_their_fields() {
        let log = EventLog::default();
        let subscriber = tracing_subscriber::registry().with(log.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("not kept");
            tracing::info!(view = "[1, 2]", "view changed");
            tracing::warn!("checker down");
            for i in 0..KEPT {
                tracing::info!(i, "filler");
            }
            tracing::error!(code = 3, "last");
        });
        let events = log.recent();
        assert_eq!(events.len(), KEPT);
        assert_eq!(events[KEPT - 1].message, "last code=3");
        assert_eq!(events[KEPT - 1].level, "ERROR");
        assert!(events
            .iter()
            .all(|e| e.message != "not kept" && e.unix_ms > 0));
        // The oldest went first.
        assert!(!events.iter().any(|e| e.message.starts_with("view changed")));
        assert_eq!(events[0].message, "filler i=1");
    }
}
