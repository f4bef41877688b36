//! The Stator operator: reconciles `StreamJob` resources into replica pods with the state sidecar.
//!
//! A skeleton until its own issue (the operator, the CRD and the chart) lands.

fn main() {
    eprintln!("stator-operator: not implemented yet; see the operator issue");
    std::process::exit(2);
}
