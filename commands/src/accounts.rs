//! The first slice: sign-up, sign-in, profile, organization settings.
