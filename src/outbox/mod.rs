//! Outbound notices over SMS and email, behind the same [`crate::platform::PlatformError`] as chat.
pub mod email;
pub mod sms;
