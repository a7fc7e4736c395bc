//! step-halt-all
