//! What can go wrong running a command, in the command layer's own terms.

use crate::ports::SecretsError;
use crate::store::StoreError;
use warden_domain::event::CodecError;
use warden_domain::values::ValidationError;

/// A command's failure. `E` is the aggregate's domain error.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Domain(E),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Another writer kept winning; the decision could not be made on fresh state.
    #[error("the resource was changed concurrently; try again")]
    Conflict,
    #[error("{0} is already taken")]
    ClaimTaken(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl<E: std::error::Error + 'static> From<StoreError> for CommandError<E> {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ClaimTaken { key } => CommandError::ClaimTaken(key),
            StoreError::VersionConflict { .. } => CommandError::Conflict,
            other => CommandError::Store(other),
        }
    }
}

impl<E: std::error::Error + 'static> CommandError<E> {
    /// Re-types the domain error (for handlers that touch two aggregates).
    pub fn map_domain<F: std::error::Error + 'static>(
        self,
        f: impl FnOnce(E) -> F,
    ) -> CommandError<F> {
        match self {
            CommandError::Domain(e) => CommandError::Domain(f(e)),
            CommandError::Invalid(e) => CommandError::Invalid(e),
            CommandError::Conflict => CommandError::Conflict,
            CommandError::ClaimTaken(k) => CommandError::ClaimTaken(k),
            CommandError::Store(e) => CommandError::Store(e),
            CommandError::Secrets(e) => CommandError::Secrets(e),
            CommandError::Codec(e) => CommandError::Codec(e),
        }
    }
}
