//! Kubernetes Events about the objects the operator manages: one Event per distinct message,
//! repeats of the same message counted as a series on it.
//!
//! kube's `Recorder` keys its series by type, reason and action but not by the message, so a
//! second message with the same reason ("attempt 2 of 2 … giving up" after "attempt 1 of 2 …
//! trying again", the second of two disposed savepoints) only raised the first Event's count and
//! was never shown. Here the message is part of the key.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a message is remembered: a repeat within it extends its series, a later one
/// starts a new Event (the API server keeps Events for an hour).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// The API server refuses an Event whose note is longer (`events.k8s.io/v1`).
const MAX_NOTE_BYTES: usize = 1024;

/// What makes two publications the same Event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    regarding: String,
    warning: bool,
    reason: String,
    note: String,
}

/// The Event a key was published as.
#[derive(Debug, Clone)]
struct Published {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Publishes Events as the operator.
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    seen: Mutex<HashMap<Key, Published>>,
}

impl Events {
    /// A publisher reporting as `controller` (and `instance`, by default the controller).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `note` about `regarding`, or counts it again if it was published lately.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let note = truncate(note, MAX_NOTE_BYTES);
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = Key {
            namespace: namespace.clone(),
            regarding: regarding
                .uid
                .clone()
                .or_else(|| regarding.name.clone())
                .unwrap_or_default(),
            warning,
            reason: reason.to_string(),
            note: note.clone(),
        };
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.retain(|_, p| p.last + SERIES_TTL > now);
            seen.get(&key).cloned()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let published = match repeat {
            Some(p) => {
                let count = p.count + 1;
                let series = EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                };
                events
                    .patch(
                        &p.name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({ "series": series })),
                    )
                    .await?;
                Published {
                    count,
                    last: now,
                    ..p
                }
            }
            None => {
                let name = format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or("object"),
                    now.as_nanosecond()
                );
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace),
                        ..Default::default()
                    },
                    action: Some(action.to_string()),
                    reason: Some(reason.to_string()),
                    note: Some(note),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding.clone()),
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    type_: Some(if warning { "Warning" } else { "Normal" }.into()),
                    ..Default::default()
                };
                events.create(&PostParams::default(), &event).await?;
                Published {
                    name,
                    count: 1,
                    last: now,
                }
            }
        };
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, published);
        Ok(())
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked with "…" when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let ellipsis = "…";
    let mut end = max - ellipsis.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn notes_are_cut_to_the_api_limit_on_a_character_boundary() {
        assert_eq!(truncate("short", 1024), "short");
        let long = "é".repeat(600); // 1200 bytes
        let cut = truncate(&long, 1024);
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
    }
}
