//! Backup devices.
