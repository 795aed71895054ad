//! The demo's scenarios, on every edu: DMA lands at exactly the mapped PA,
//! reads get the right bytes, an unmapped IPA faults translation, a write to
//! a read-only page faults permission, an unmap is invalidated, two VMs at
//! the same IPA do not cross, and detach blocks until reattach.

use super::*;

/// A demo scenario's verdict as a test result; prints the evidence.
#[track_caller]
fn scenario(what: &str, r: Result<String, String>) -> TestResult {
    match r {
        Ok(detail) => {
            println!("  {what}: {detail}");
            Ok(())
        }
        Err(detail) => {
            let mut f = Failure::new(String::from(what));
            f.actual = Some(detail);
            Err(f)
        }
    }
}

pub(super) fn write_lands_at_exact_mapped_pa() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        let t = try_ok!(smmu.translate(vm.domain, IPA_DATA)).ok_or(Failure::new("mapped"))?;
        check_eq!(
            (t.pa, t.size, t.perm),
            (vm.data.pa(), PAGE, Perm::ReadWrite)
        );
        let source_before = vm.source.read(0, PAGE as usize);
        scenario(
            &format!("{} write lands", e.bdf),
            demo::write_lands(&smmu, e, vm),
        )?;
        // Only the data page changed; the neighbours mapped around it did not.
        check!(vm.readonly.all(CANARY), "read-only page changed");
        check!(vm.scratch.all(CANARY), "scratch page changed");
        check_eq!(vm.source.read(0, PAGE as usize), source_before);
    }
    teardown_all(&smmu, &vms)
}

pub(super) fn read_gets_right_bytes() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        scenario(
            &format!("{} read", e.bdf),
            demo::read_right_bytes(&smmu, e, vm),
        )?;
        // The bytes are this VM's own pattern, not another VM's.
        for other in vms.iter().filter(|o| o.domain != vm.domain) {
            check!(
                vm.data.read(0, 64) != other.source.read(0x800, 64),
                "VM {} read VM {}'s bytes",
                vm.domain,
                other.domain
            );
        }
    }
    teardown_all(&smmu, &vms)
}

pub(super) fn unmapped_ipa_faults_translation() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        check_eq!(try_ok!(smmu.translate(vm.domain, IPA_UNMAPPED)), None);
        scenario(
            &format!("{} unmapped IPA", e.bdf),
            demo::unmapped_blocked(&smmu, &edus, e, vm),
        )?;
        // A second one just past the last mapped page, with our own oracle.
        let ipa = IPA_SCRATCH + PAGE;
        edu_ok(e.dma_to_ram(0, ipa, 128))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FTranslation, vm.sid, ipa)?;
        check!(vm.scratch.all(CANARY), "page below the hole changed");
    }
    teardown_all(&smmu, &vms)
}

pub(super) fn write_to_readonly_faults_permission() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        scenario(
            &format!("{} read-only", e.bdf),
            demo::readonly_blocked(&smmu, &edus, e, vm),
        )?;
        // The source page is read-only too: reading it works, writing it faults.
        let before = vm.source.read(0, PAGE as usize);
        edu_ok(e.dma_to_ram(0x40, IPA_SOURCE + 0x40, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FPermission, vm.sid, IPA_SOURCE + 0x40)?;
        check_eq!(vm.source.read(0, PAGE as usize), before);
    }
    teardown_all(&smmu, &vms)
}

pub(super) fn unmap_invalidates_with_one_range_tlbi() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    check!(smmu.features().ril, "QEMU's SMMU has RIL");
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        let vmid = try_ok!(smmu.domain_info(vm.domain)).vmid;
        // Use the mapping first, so the SMMU caches the translation.
        edu_ok(e.dma_to_ram(0, IPA_SCRATCH, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(!vm.scratch.all(CANARY), "the mapped write did not land");

        let before = smmu.stats().cmdq;
        try_ok!(smmu.unmap(vm.domain, IPA_SCRATCH, PAGE));
        let after = smmu.stats().cmdq;
        check_eq!(
            (
                after.commands - before.commands,
                after.syncs - before.syncs,
                after.prod_writes - before.prod_writes
            ),
            (1, 1, 1)
        );
        // The one command is a TLBI_S2_IPA of exactly this page: without a
        // TTL hint, a one-page range (TG != 0, TTL = NUM = SCALE = 0) is
        // the encoding IHI 0070 reserves (hardware answers CERROR_ILL), so
        // the plan is the non-range form.
        check_eq!(
            planned(&smmu, vmid, IPA_SCRATCH, PAGE),
            InvalidationPlan::Precise(alloc::vec![Command::TlbiS2Ipa {
                vmid,
                addr: IPA_SCRATCH,
                leaf: false,
                range: None,
            }])
        );
        check_eq!(try_ok!(smmu.translate(vm.domain, IPA_SCRATCH)), None);

        vm.scratch.fill(CANARY);
        edu_ok(e.dma_to_ram(0, IPA_SCRATCH, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FTranslation, vm.sid, IPA_SCRATCH)?;
        check!(
            vm.scratch.all(CANARY),
            "stale TLB entry: write reached the unmapped page"
        );
        // The neighbours are still mapped and still work.
        edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    }
    teardown_all(&smmu, &vms)
}

pub(super) fn two_vms_same_ipa_no_crossing() -> TestResult {
    let edus = edus_at_least(2)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for i in 0..vms.len() {
        for j in 0..vms.len() {
            if i == j {
                continue;
            }
            let (a, b) = (&vms[i], &vms[j]);
            let ta = try_ok!(smmu.translate(a.domain, IPA_DATA)).ok_or(Failure::new("A maps"))?;
            let tb = try_ok!(smmu.translate(b.domain, IPA_DATA)).ok_or(Failure::new("B maps"))?;
            check!(ta.pa != tb.pa, "same IPA, same PA {:#x}", ta.pa);
            check!(
                try_ok!(smmu.domain_info(a.domain)).vmid
                    != try_ok!(smmu.domain_info(b.domain)).vmid
            );
            scenario(
                &format!("{} -> {} no crossing", edus[i].bdf, edus[j].bdf),
                demo::two_vms_same_ipa(&smmu, &edus, (&edus[i], a), (&edus[j], b)),
            )?;
            // Nothing of A's reached B's other pages either.
            check!(b.readonly.all(CANARY) && b.scratch.all(CANARY));
        }
    }
    teardown_all(&smmu, &vms)
}

pub(super) fn detach_blocks_and_reattach_restores() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        // Works while attached.
        edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(!vm.data.all(CANARY), "attached write did not land");
        scenario(
            &format!("{} detach", e.bdf),
            demo::detach_blocks(&smmu, e, vm),
        )?;
        check_eq!(smmu.domain_of(vm.sid), None);
        check_eq!(try_ok!(smmu.domain_info(vm.domain)).sids, Vec::<u32>::new());
        let ste = try_ok!(smmu.ste(vm.sid));
        check!(ste.is_valid() && ste.config() == SteConfig::Abort);
        // Attaching again restores exactly the domain's view.
        try_ok!(smmu.attach(vm.domain, vm.sid));
        vm.data.fill(CANARY);
        edu_ok(e.dma_to_ram(0x10, IPA_DATA + 0x10, 32))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(vm.data.first_change_outside(0x10, 0x30, CANARY).is_none());
        check!(!vm.data.all(CANARY), "re-attached write did not land");
    }
    teardown_all(&smmu, &vms)
}
