//! Tests of central-manager alone (no pod-host).
