package softtpm

import "slices"

// Capabilities (TPM_CAP) softtpm answers.
const (
	capHandles       uint32 = 0x1
	capCommands      uint32 = 0x2
	capPCRs          uint32 = 0x5
	capTPMProperties uint32 = 0x6
)

// maxCapItems bounds one answer, as MAX_CAP_BUFFER does on a TPM.
const maxCapItems = 64

type property struct{ tag, value uint32 }

// properties returns the TPM_PT values in ascending order: the fixed group, shaped like
// swtpm's, and the variable group (which depends on what the channel has loaded).
func (c *channel) properties() []property {
	loadedObjects, loadedSessions := 0, 0
	for _, o := range c.objects {
		if o != nil {
			loadedObjects++
		}
	}
	for _, s := range c.sessions {
		if s != nil {
			loadedSessions++
		}
	}
	return []property{
		{0x100, 0x322E3000},                  // FAMILY_INDICATOR "2.0"
		{0x101, 0},                           // LEVEL
		{0x102, 164},                         // REVISION 1.64
		{0x103, 1},                           // DAY_OF_YEAR
		{0x104, 2026},                        // YEAR
		{0x105, manufacturer},                // MANUFACTURER
		{0x106, vendorString1},               // VENDOR_STRING_1
		{0x107, vendorString2},               // VENDOR_STRING_2
		{0x108, 0},                           // VENDOR_STRING_3
		{0x109, 0},                           // VENDOR_STRING_4
		{0x10A, 1},                           // VENDOR_TPM_TYPE
		{0x10B, firmwareV1},                  // FIRMWARE_VERSION_1
		{0x10C, firmwareV2},                  // FIRMWARE_VERSION_2
		{0x10D, maxNVBufferSize},             // INPUT_BUFFER
		{0x10E, maxTransient},                // HR_TRANSIENT_MIN
		{0x10F, 7},                           // HR_PERSISTENT_MIN
		{0x110, maxSessions},                 // HR_LOADED_MIN
		{0x111, maxSessions},                 // ACTIVE_SESSIONS_MAX
		{0x112, pcrCount},                    // PCR_COUNT
		{0x113, pcrSelectSize},               // PCR_SELECT_MIN
		{0x114, 0xFFFF},                      // CONTEXT_GAP_MAX
		{0x116, 0},                           // NV_COUNTERS_MAX
		{0x117, maxNVBufferSize * 2},         // NV_INDEX_MAX
		{0x118, 0x6},                         // MEMORY: objectSlots, sharedNV
		{0x119, 4096},                        // CLOCK_UPDATE
		{0x11A, uint32(algSHA256)},           // CONTEXT_HASH
		{0x11B, uint32(algAES)},              // CONTEXT_SYM
		{0x11C, 256},                         // CONTEXT_SYM_SIZE
		{0x11D, 255},                         // ORDERLY_COUNT
		{0x11E, maxCommandSize},              // MAX_COMMAND_SIZE
		{0x11F, maxCommandSize},              // MAX_RESPONSE_SIZE
		{0x120, maxDigestSize},               // MAX_DIGEST
		{0x121, 2692},                        // MAX_OBJECT_CONTEXT
		{0x122, 404},                         // MAX_SESSION_CONTEXT
		{0x123, 1},                           // PS_FAMILY_INDICATOR: PC client
		{0x124, 0},                           // PS_LEVEL
		{0x125, 164},                         // PS_REVISION
		{0x126, 1},                           // PS_DAY_OF_YEAR
		{0x127, 2026},                        // PS_YEAR
		{0x128, 128},                         // SPLIT_MAX
		{0x129, uint32(len(commandCodes()))}, // TOTAL_COMMANDS
		{0x12A, uint32(len(commandCodes()))}, // LIBRARY_COMMANDS
		{0x12B, 0},                           // VENDOR_COMMANDS
		{0x12C, maxNVBufferSize},             // NV_BUFFER_MAX
		{0x12D, 0},                           // MODES
		{0x12E, maxNVBufferSize},             // MAX_CAP_BUFFER
		{0x200, 0x400},                       // PERMANENT: tpmGeneratedEPS
		{0x201, 0x8000000F},                  // STARTUP_CLEAR: ph, sh, eh, phEnableNV, orderly
		{0x202, 1},                           // HR_NV_INDEX
		{0x203, uint32(loadedSessions)},      // HR_LOADED
		{0x204, uint32(maxSessions - loadedSessions)}, // HR_LOADED_AVAIL
		{0x205, uint32(loadedSessions)},               // HR_ACTIVE
		{0x206, uint32(maxSessions - loadedSessions)}, // HR_ACTIVE_AVAIL
		{0x207, uint32(maxTransient - loadedObjects)}, // HR_TRANSIENT_AVAIL
		{0x208, 2}, // HR_PERSISTENT
		{0x209, 5}, // HR_PERSISTENT_AVAIL
	}
}

func (x *command) getCapability() rc {
	p := &x.params
	capability, prop, count := p.u32(), p.u32(), p.u32()
	if p.short {
		return rcInsufficient.param(1)
	}
	if code := x.end(); code != rcSuccess {
		return code
	}
	count = min(count, maxCapItems)
	var more bool
	var body writer
	switch capability {
	case capTPMProperties:
		all := x.c.properties()
		i, _ := slices.BinarySearchFunc(all, prop, func(p property, t uint32) int { return int(int64(p.tag) - int64(t)) })
		var out []property
		// Like the reference implementation, one answer stays within one group (fixed or
		// variable) of properties.
		for ; i < len(all) && (len(out) == 0 || all[i].tag>>8 == out[0].tag>>8); i++ {
			if uint32(len(out)) == count {
				more = true
				break
			}
			out = append(out, all[i])
		}
		body.u32(uint32(len(out)))
		for _, p := range out {
			body.u32(p.tag)
			body.u32(p.value)
		}
	case capHandles:
		var hs []uint32
		switch handleType(prop) {
		case htTransient:
			for i, o := range x.c.objects {
				if o != nil {
					hs = append(hs, transientFirst+uint32(i))
				}
			}
		case htPersistent:
			hs = []uint32{HandleSRK, HandleEK}
		case htNVIndex:
			hs = []uint32{NVIndexEKCert}
		case 0x02: // TPM_HT_LOADED_SESSION
			for _, s := range x.c.sessions {
				if s != nil {
					hs = append(hs, s.handle)
				}
			}
		case htPolicySession: // TPM_HT_SAVED_SESSION: softtpm saves no contexts
		case htPermanent:
			hs = []uint32{rhOwner, rhNull, rsPW, rhLockout, rhEndorsement, rhPlatform}
		default:
			return rcValue.param(2)
		}
		hs = slices.DeleteFunc(hs, func(h uint32) bool { return h < prop })
		if uint32(len(hs)) > count {
			hs, more = hs[:count], true
		}
		body.u32(uint32(len(hs)))
		for _, h := range hs {
			body.u32(h)
		}
	case capCommands:
		var ccs []uint32
		for _, cc := range commandCodes() {
			if cc >= prop&0xFFFF {
				ccs = append(ccs, cc)
			}
		}
		if uint32(len(ccs)) > count {
			ccs, more = ccs[:count], true
		}
		body.u32(uint32(len(ccs)))
		for _, cc := range ccs {
			sp, _ := lookup(cc)
			attrs := cc | uint32(len(sp.handles))<<25
			if sp.respHandle {
				attrs |= 1 << 28
			}
			if cc == ccFlushContext {
				attrs |= 1 << 24 // flushed
			}
			body.u32(attrs)
		}
	case capPCRs:
		marshalPCRSelections(&body, []pcrSelection{{hash: algSHA256, bits: []byte{0xFF, 0xFF, 0xFF}}})
	default:
		return rcValue.param(1)
	}
	if more {
		x.out.u8(1)
	} else {
		x.out.u8(0)
	}
	x.out.u32(capability)
	x.out.raw(body.b)
	return rcSuccess
}
