//! `deploywatch demo`: a story in, a running deploywatch fed by a simulated service out.
//! [`sim`] simulates a Kubernetes service scraped by Prometheus; [`story`] says what
//! happens to it and which verdict each deploy must end with.

pub mod sim;
