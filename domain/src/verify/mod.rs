//! Verify: the Telnyx-compatible phone verification product customers build into their own
//! apps. Profiles configure it ([`profile`]), each code sent is a [`verification`], and
//! [`template`]s word the messages. Codes never appear in events: only keyed digests.

pub mod country;
pub mod profile;
pub mod template;
pub mod values;
pub mod verification;
