//! step-env-reconcile
