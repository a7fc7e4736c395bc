//! step-restore
