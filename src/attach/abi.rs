//! The probe plan's offsets in the kernel's layout (`ebpf_abi` stays a leaf: it knows nothing
//! of the plan).

use crate::ebpf_abi::{self, GoOffsetsAbi, GrpcOffsetsAbi};
use crate::inspect::{GoOffsets, GrpcOffsets};

impl From<&GoOffsets> for GoOffsetsAbi {
    fn from(o: &GoOffsets) -> Self {
        GoOffsetsAbi {
            request_method: o.request_method,
            request_url: o.request_url,
            request_content_length: o.request_content_length,
            request_remote_addr: o.request_remote_addr,
            url_path: o.url_path,
            response_req: o.response_req,
            response_status: o.response_status,
            response_written: o.response_written,
            h2rw_rws: o.h2rw_rws,
            rws_status: o.rws_status,
            rws_wrote_bytes: o.rws_wrote_bytes,
            url_scheme: o.url_scheme,
            url_host: o.url_host,
            client_status_code: o.client_status_code,
            client_content_length: o.client_content_length,
            request_header: o.request_header,
            map_layout: ebpf_abi::MAP_BUCKETS,
        }
    }
}

impl From<&GrpcOffsets> for GrpcOffsetsAbi {
    fn from(o: &GrpcOffsets) -> Self {
        GrpcOffsetsAbi {
            stream_method: o.stream_method,
            stream_status: o.stream_status,
            status_proto: o.status_proto,
            proto_code: o.proto_code,
            error_status: o.error_status,
            error_indirect: u32::from(o.error_indirect),
            cc_target: o.cc_target,
            cs_attempt: o.cs_attempt,
            attempt_stream: o.attempt_stream,
        }
    }
}
