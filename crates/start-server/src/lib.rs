//! step-start-server
