//! Snapshots: what the handle and each registered part expose of their state.

use std::fmt;
use std::time::Duration;

use crate::feedback::CircuitState;

/// One value in a [`SnapshotPart`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SnapshotValue {
    /// A count or a limit.
    U64(u64),
    /// A signed figure.
    I64(i64),
    /// A rate or a ratio.
    F64(f64),
    /// A flag.
    Bool(bool),
    /// A length of time.
    Duration(Duration),
    /// A state name or a label.
    Text(String),
    /// Not known (yet).
    Unknown,
}

impl fmt::Display for SnapshotValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotValue::U64(v) => write!(f, "{v}"),
            SnapshotValue::I64(v) => write!(f, "{v}"),
            SnapshotValue::F64(v) => write!(f, "{v:.3}"),
            SnapshotValue::Bool(v) => write!(f, "{v}"),
            SnapshotValue::Duration(v) => write!(f, "{v:?}"),
            SnapshotValue::Text(v) => f.write_str(v),
            SnapshotValue::Unknown => f.write_str("?"),
        }
    }
}

macro_rules! from_value {
    ($($t:ty => $variant:ident $(as $cast:ty)?),*) => {$(
        impl From<$t> for SnapshotValue {
            fn from(v: $t) -> Self {
                SnapshotValue::$variant(v $(as $cast)?)
            }
        }
    )*};
}

from_value!(u64 => U64, u32 => U64 as u64, usize => U64 as u64, i64 => I64, f64 => F64,
    bool => Bool, Duration => Duration, String => Text);

impl From<&str> for SnapshotValue {
    fn from(v: &str) -> Self {
        SnapshotValue::Text(v.to_owned())
    }
}

impl<T: Into<SnapshotValue>> From<Option<T>> for SnapshotValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SnapshotValue::Unknown, Into::into)
    }
}

/// What one registered part (a concurrency limiter, a budget, a breaker) exposes.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPart {
    /// The part's name, e.g. `"concurrency"`, `"budget"`, `"breaker"`.
    pub component: String,
    /// Named values, in the order the part chose.
    pub fields: Vec<(String, SnapshotValue)>,
}

impl SnapshotPart {
    /// An empty part named `component`.
    pub fn new(component: impl Into<String>) -> Self {
        SnapshotPart {
            component: component.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<SnapshotValue>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// The value of field `name`, if present.
    pub fn get(&self, name: &str) -> Option<&SnapshotValue> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

impl fmt::Display for SnapshotPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.component)?;
        for (name, value) in &self.fields {
            write!(f, " {name}={value}")?;
        }
        Ok(())
    }
}

/// The state of a [`Feedback`](crate::Feedback) handle and of the parts registered with it, at one
/// instant.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The handle's name, if it has one.
    pub name: Option<Box<str>>,
    /// Logical requests in progress (slots not yet ended).
    pub open_slots: usize,
    /// Attempts published as successes so far.
    pub attempts_success: u64,
    /// Attempts published as overloaded (429 / 503 / 529 / `RESOURCE_EXHAUSTED`) so far.
    pub attempts_overloaded: u64,
    /// Attempts published as failures so far.
    pub attempts_failure: u64,
    /// Attempts published as fatal so far.
    pub attempts_fatal: u64,
    /// Attempts abandoned before their result was known.
    pub attempts_cancelled: u64,
    /// How long the pause gate still holds dispatch, if it does.
    pub paused_for: Option<Duration>,
    /// The breaker's state.
    pub circuit: CircuitState,
    /// What each registered part exposes.
    pub parts: Vec<SnapshotPart>,
}

impl Snapshot {
    /// The part named `component`, if one is registered.
    pub fn part(&self, component: &str) -> Option<&SnapshotPart> {
        self.parts.iter().find(|p| p.component == component)
    }

    /// All attempts published so far.
    pub fn attempts(&self) -> u64 {
        self.attempts_success
            + self.attempts_overloaded
            + self.attempts_failure
            + self.attempts_fatal
            + self.attempts_cancelled
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "open_slots={} attempts={} (ok {}, overloaded {}, failed {}, fatal {}, cancelled {}) circuit={}",
            self.open_slots,
            self.attempts(),
            self.attempts_success,
            self.attempts_overloaded,
            self.attempts_failure,
            self.attempts_fatal,
            self.attempts_cancelled,
            self.circuit
        )?;
        if let Some(p) = self.paused_for {
            write!(f, " paused_for={p:?}")?;
        }
        for part in &self.parts {
            write!(f, "\n  {part}")?;
        }
        Ok(())
    }
}
