//! step-stop-server
