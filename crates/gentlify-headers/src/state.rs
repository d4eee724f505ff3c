//! The last quota state per dimension, kept for the handle's snapshot (part `"headers"`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gentlify_core::{Controller, Dimension, Feedback, Quota, QuotaReport, SnapshotPart};
use tokio::time::Instant;

/// One per handle (kept in [`Feedback::shared`]), registered once, whatever the number of header
/// layers built on the handle: it hears every quota report published to the handle, from this
/// crate's parsers or from anyone else.
#[derive(Debug, Default)]
pub(crate) struct LastQuotas {
    registered: AtomicBool,
    inner: Mutex<Board>,
}

#[derive(Debug, Default)]
struct Board {
    reports: u64,
    pauses: u64,
    last_pause: Option<(Duration, String)>,
    quotas: BTreeMap<(Dimension, Option<Box<str>>), Entry>,
}

#[derive(Debug)]
struct Entry {
    source: &'static str,
    observed_at: Instant,
    quota: Quota,
}

impl LastQuotas {
    /// The handle's board, registered with it on first use.
    pub(crate) fn of(feedback: &Feedback) -> Arc<LastQuotas> {
        let board = feedback.shared(LastQuotas::default);
        if !board.registered.swap(true, Ordering::AcqRel) {
            feedback.register(&board);
        }
        board
    }

    pub(crate) fn paused(&self, pause: Duration, cause: String) {
        let mut board = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        board.pauses += 1;
        board.last_pause = Some((pause, cause));
    }
}

impl Controller for LastQuotas {
    fn on_quota(&self, report: &QuotaReport) {
        let mut board = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        board.reports += 1;
        for quota in &report.quotas {
            board.quotas.insert(
                (quota.dimension, quota.name.clone()),
                Entry {
                    source: report.source,
                    observed_at: report.observed_at,
                    quota: quota.clone(),
                },
            );
        }
    }

    fn snapshot(&self) -> Option<SnapshotPart> {
        let board = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut part = SnapshotPart::new("headers")
            .field("reports", board.reports)
            .field("pauses", board.pauses)
            .field("last_pause", board.last_pause.as_ref().map(|(d, _)| *d))
            .field(
                "last_pause_cause",
                board.last_pause.as_ref().map(|(_, c)| c.clone()),
            );
        for ((dimension, name), entry) in &board.quotas {
            let prefix = match name {
                Some(name) => format!("{dimension}.{name}"),
                None => dimension.to_string(),
            };
            let reset_in = entry.quota.reset_after.map(|reset| {
                entry
                    .observed_at
                    .checked_add(reset)
                    .map_or(reset, |at| at.saturating_duration_since(now))
            });
            part = part
                .field(format!("{prefix}.source"), entry.source)
                .field(format!("{prefix}.limit"), entry.quota.limit)
                .field(format!("{prefix}.remaining"), entry.quota.remaining)
                .field(format!("{prefix}.reset_in"), reset_in)
                .field(format!("{prefix}.window"), entry.quota.window);
        }
        Some(part)
    }
}
