"""Settings of disk images and boot tests (docs/disk-images.md, docs/boot-tests.md), read from the environment.

portal/settings.py takes every upper-case name here as a setting, `task_routes` into CELERY_TASK_ROUTES and
`beat_schedule` into CELERY_BEAT_SCHEDULE. Every variable is listed, with its default, in `.env.example`.
"""

from portal.environment import Env

env = Env()
beat_schedule = {}
task_routes = {}

# --- Disk images (docs/disk-images.md) -------------------------------------------------------------------------------
# The tool offered first: image-builder (osbuild's successor, run from its container image) or bib
# (bootc-image-builder, archived upstream in 2026-06). Each conversion may pick either, among the images below.
DISK_IMAGE_BACKEND = env.str("DISK_IMAGE_BACKEND", default="image-builder")
# The bootc-image-builder images people may pick; with image-builder's image, the only images ever run privileged.
DISK_IMAGE_BUILDER_IMAGES = env.list("DISK_IMAGE_BUILDER_IMAGES", default=[
    "quay.io/centos-bootc/bootc-image-builder:latest",
    "registry.redhat.io/rhel9/bootc-image-builder:latest",
    "registry.redhat.io/rhel10/bootc-image-builder:latest",
])
DISK_IMAGE_IMAGE_BUILDER_IMAGE = env.str("DISK_IMAGE_IMAGE_BUILDER_IMAGE", default="ghcr.io/osbuild/image-builder-cli:latest")
DISK_IMAGE_BUILDER_PULL = env.str("DISK_IMAGE_BUILDER_PULL", default="newer")  # podman run --pull= for the builder image
DISK_IMAGE_TIMEOUT_MINUTES = env.int("DISK_IMAGE_TIMEOUT_MINUTES", default=180)
DISK_IMAGE_STORAGE = env.str("DISK_IMAGE_STORAGE", default="default")  # a STORAGES alias for the artifacts
DISK_IMAGE_RETENTION_DAYS = env.int("DISK_IMAGE_RETENTION_DAYS", default=30)  # for teams without their own policy
DISK_IMAGE_RETENTION_KEEP_LATEST = env.int("DISK_IMAGE_RETENTION_KEEP_LATEST", default=3)
beat_schedule["disk-images-expire"] = {"task": "builds.diskimages.tasks.artifacts_expire", "schedule": 3600.0}

# --- Boot tests (docs/boot-tests.md) ---------------------------------------------------------------------------------
# A throwaway QEMU VM boots a digest's own kernel and root file system; a stage may require a pass before promotion.
BOOT_TEST_QUEUE = env.str("BOOT_TEST_QUEUE", default="boottests")  # its workers' concurrency is the VM limit
BOOT_TEST_ACCEL = env.str("BOOT_TEST_ACCEL", default="auto")  # auto (KVM when /dev/kvm is usable), kvm or tcg
BOOT_TEST_FIRMWARE = env.str("BOOT_TEST_FIRMWARE", default="bios")  # bios (SeaBIOS) or uefi (OVMF)
BOOT_TEST_OVMF_CODE = env.str("BOOT_TEST_OVMF_CODE", default="/usr/share/OVMF/OVMF_CODE_4M.fd")
BOOT_TEST_MEMORY_MB = env.int("BOOT_TEST_MEMORY_MB", default=512)
BOOT_TEST_CPUS = env.int("BOOT_TEST_CPUS", default=1)
# What on the console means "booted": a login prompt, or greenboot's boot-complete.
BOOT_TEST_MARKER = env.str("BOOT_TEST_MARKER", default=r"login: ?$|boot-complete\.target|Reached target.*Boot Complete")
BOOT_TEST_BOOT_SECONDS = env.int("BOOT_TEST_BOOT_SECONDS", default=300)  # from QEMU's start to the marker
BOOT_TEST_SOAK_SECONDS = env.int("BOOT_TEST_SOAK_SECONDS", default=0)  # the VM stays up this long after the marker
BOOT_TEST_CHECK_SECONDS = env.int("BOOT_TEST_CHECK_SECONDS", default=120)  # each round of the checks over SSH
BOOT_TEST_TIMEOUT_MINUTES = env.int("BOOT_TEST_TIMEOUT_MINUTES", default=20)  # the whole run, copy included
BOOT_TEST_CONSOLE_MAX_BYTES = env.int("BOOT_TEST_CONSOLE_MAX_BYTES", default=4 * 1024 * 1024)
BOOT_TEST_ROOTFS_MAX_BYTES = env.int("BOOT_TEST_ROOTFS_MAX_BYTES", default=512 * 1024 * 1024)
BOOT_TEST_WORK_DIR = env.str("BOOT_TEST_WORK_DIR", default="")  # where each run's copy and VM files go (a temp dir)
task_routes["builds.diskimages.tasks.boot_test_run"] = {"queue": BOOT_TEST_QUEUE}
task_routes["builds.diskimages.tasks.boot_test_reap"] = {"queue": BOOT_TEST_QUEUE}
beat_schedule["boot-tests-reap"] = {"task": "builds.diskimages.tasks.boot_test_reap", "schedule": 600.0}
