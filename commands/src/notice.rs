//! Best-effort email notices about changes that are already committed: a notice that cannot
//! be sent is logged, never undone, and never fails the command.

use uuid::Uuid;
use warden_domain::user::User;
use warden_domain::Aggregate;

use crate::pipeline::Pipeline;
use crate::ports::Secrets;
use crate::sender::{Channel, OutboundMessage, Sender};

/// Emails `text` to the user's current address, if they have one that can still be opened
/// (a forgotten person's cannot).
pub(crate) async fn email_user(
    pipeline: &Pipeline,
    secrets: &dyn Secrets,
    sender: &dyn Sender,
    user_id: Uuid,
    text: &str,
) {
    let email = match pipeline
        .load::<User, std::convert::Infallible>(&User::stream_id(user_id))
        .await
    {
        Ok(loaded) => match &loaded.state.email {
            Some(sealed) => secrets.open(sealed).await.ok().flatten(),
            None => None,
        },
        Err(e) => {
            tracing::warn!(%user_id, error = %e, "notice not sent: user not loaded");
            return;
        }
    };
    let Some(email) = email else { return };
    let message = OutboundMessage::new(
        Channel::Email,
        String::from_utf8_lossy(&email),
        text,
        None,
        "notice",
    );
    if let Err(e) = sender.send(&message).await {
        tracing::warn!(%user_id, error = %e, "notice not sent");
    }
}
