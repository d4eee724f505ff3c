//! The last quota state per dimension, kept for the handle's snapshot (part `"headers"`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gentlify_core::{Controller, Feedback, Quota, QuotaReport, SnapshotPart};
use tokio::time::Instant;

/// One per handle (kept in [`Feedback::shared`]), registered once, whatever the number of header
/// layers built on the handle: it hears every quota report published to the handle, from this
/// crate's parsers or from anyone else.
#[derive(Debug, Default)]
pub(crate) struct LastQuotas {
    registered: AtomicBool,
    inner: Mutex<Board>,
}

/// At most this many quotas (dimension and name) are kept for the snapshot. Real servers report
/// a handful (Anthropic four, an IETF policy list a few); a server naming a new quota on every
/// response (a GitHub-style `x-ratelimit-resource` that changes) must not grow the board without
/// bound, so past this many the quota heard from longest ago makes room.
pub(crate) const MAX_QUOTAS: usize = 32;

#[derive(Debug, Default)]
struct Board {
    reports: u64,
    pauses: u64,
    last_pause: Option<(Duration, String)>,
    /// Few entries, searched linearly: an update in place allocates nothing.
    quotas: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    source: &'static str,
    observed_at: Instant,
    quota: Quota,
}

impl Entry {
    fn is(&self, quota: &Quota) -> bool {
        self.quota.dimension == quota.dimension && self.quota.name == quota.name
    }

    /// Takes `quota`'s readings (its dimension and name being this entry's).
    fn update(&mut self, source: &'static str, observed_at: Instant, quota: &Quota) {
        self.source = source;
        self.observed_at = observed_at;
        self.quota.limit = quota.limit;
        self.quota.remaining = quota.remaining;
        self.quota.reset_after = quota.reset_after;
        self.quota.window = quota.window;
    }
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
    fn wants_outcomes(&self) -> bool {
        // The board keeps the last quotas heard; outcomes say nothing to it.
        false
    }

    fn on_quota(&self, report: &QuotaReport) {
        let mut board = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        board.reports += 1;
        for quota in &report.quotas {
            if let Some(entry) = board.quotas.iter_mut().find(|e| e.is(quota)) {
                entry.update(report.source, report.observed_at, quota);
                continue;
            }
            let entry = Entry {
                source: report.source,
                observed_at: report.observed_at,
                quota: quota.clone(),
            };
            if board.quotas.len() < MAX_QUOTAS {
                board.quotas.push(entry);
            } else if let Some(oldest) = board.quotas.iter_mut().min_by_key(|e| e.observed_at) {
                *oldest = entry;
            }
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
        let mut entries: Vec<&Entry> = board.quotas.iter().collect();
        entries.sort_by(|a, b| {
            (a.quota.dimension, &a.quota.name).cmp(&(b.quota.dimension, &b.quota.name))
        });
        for entry in entries {
            let dimension = entry.quota.dimension;
            let prefix = match &entry.quota.name {
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
