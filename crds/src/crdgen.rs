//! Prints the CouponEvent CRD as YAML: `cargo run -p couponrush-crds --bin crdgen > crds/couponevent.yaml`.

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", couponrush_crds::crd_yaml()?);
    Ok(())
}
