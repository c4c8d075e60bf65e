//! `m2m-sim`: the simulator that runs a fleet of devices against local chains and reports what
//! happened (scenarios, faults, conservation check).
