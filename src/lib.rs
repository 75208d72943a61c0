//! Warden
