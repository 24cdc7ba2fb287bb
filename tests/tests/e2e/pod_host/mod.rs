//! Tests of pod-host driven directly, central-manager played by the test.
