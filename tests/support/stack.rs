//! The real stack under test: a private containerd and dockerd with runtime-tap (the real
//! binary) in front of both, dockerd's `--containerd` pointed at the containerd intercept;
//! the daemons of the generation `RTAP_GENERATION` names (see [`super::generation`]).

use std::path::PathBuf;

use runtime_tap::bed::Bed;

use super::{Tap, free_port, generation};

pub struct Stack {
    pub bed: Bed,
    pub tap: Tap,
    /// runtime-tap's containerd intercept socket.
    pub containerd: PathBuf,
    /// runtime-tap's dockerd intercept socket.
    pub docker: PathBuf,
    /// `docker save` of bb:latest and registry.k8s.io/pause:3.6, made through the proxy.
    pub images_tar: PathBuf,
}

impl Stack {
    /// Start it all; `extra` is appended to runtime-tap's config (an `[export]` section...).
    pub fn start(label: &str, extra: &str) -> Stack {
        Stack::start_with(label, extra, "")
    }

    /// As `start`, with `intercept_extra` (TOML lines such as `propagate_context = true`)
    /// added to both intercepts.
    pub fn start_with(label: &str, extra: &str, intercept_extra: &str) -> Stack {
        Stack::start_custom(label, intercept_extra, |_| extra.to_string())
    }

    /// As `start_with`, with the appended config made from the bed once it exists (further
    /// `[[intercept]]` tables in front of the bed's sockets...).
    pub fn start_custom(label: &str, intercept_extra: &str, extra: impl FnOnce(&Bed) -> String) -> Stack {
        let mut bed = Bed::with_generation(label, generation()).expect("test bed");
        let versions = bed.versions().clone();
        bed.start_containerd()
            .unwrap_or_else(|e| panic!("containerd ({versions}): {e:#}"));
        let containerd = bed.dir.join("tap/containerd.sock");
        let docker = bed.dir.join("tap/docker.sock");
        let config = format!(
            "[[intercept]]\nname = \"containerd\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n{intercept_extra}\n\n\
             [[intercept]]\nname = \"dockerd\"\nlisten = \"unix://{}\"\nupstream = \"unix://{}\"\n{intercept_extra}\n\n\
             [admin]\nlisten = \"127.0.0.1:{}\"\n\n[relay]\ngrace_period_secs = 2\n\n{extra}\n",
            containerd.display(),
            bed.containerd_socket().display(),
            docker.display(),
            bed.docker_socket().display(),
            free_port(),
            extra = extra(&bed),
        );
        let tap = Tap::start(&bed.dir, &config);
        bed.start_dockerd(&containerd)
            .unwrap_or_else(|e| panic!("dockerd through the containerd intercept ({versions}): {e:#}"));
        let images_tar = bed
            .make_images(&docker)
            .unwrap_or_else(|e| panic!("images through the proxy ({versions}): {e:#}"));
        Stack {
            bed,
            tap,
            containerd,
            docker,
            images_tar,
        }
    }
}
