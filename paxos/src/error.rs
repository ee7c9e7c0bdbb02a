//! Errors of the core's API: each says what the caller should do next.

use crate::config::ConfigError;
use crate::ids::NodeId;

/// Why a proposal or a read was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader proposes: send it to `leader` (if known).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader as far as this replica knows.
        leader: Option<NodeId>,
    },
    /// Too much is in flight; retry later.
    #[error("too many proposals in flight")]
    Backpressure,
    /// The command is larger than a slot may carry.
    #[error("command of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The command's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The configuration change is refused.
    #[error("configuration change refused: {0}")]
    Config(#[from] ConfigError),
}
