#!/bin/sh
# FERRY_QEMU for a probe: QEMU with the trace points of the switch to post-copy on, logged
# (wall-clock stamps) to $QTRACE_DIR/<-name>-<epoch ns>.log.
dir=${QTRACE_DIR:-/tmp/qtrace}
mkdir -p "$dir"
name=qemu
prev=
for a in "$@"; do
  [ "$prev" = "-name" ] && name=${a%%,*}
  prev=$a
done
exec /usr/bin/qemu-system-x86_64 "$@" \
  -trace enable=postcopy_start -trace enable=postcopy_start_set_run \
  -trace enable=migration_bitmap_sync_start -trace enable=migration_bitmap_sync_end \
  -trace enable=ram_postcopy_send_discard_bitmap -trace enable=qemu_savevm_send_postcopy_ram_discard \
  -trace enable=savevm_send_postcopy_listen -trace enable=savevm_send_postcopy_run \
  -trace enable=loadvm_postcopy_handle_run -trace enable=loadvm_postcopy_handle_run_bh \
  -trace enable=postcopy_ram_listen_thread_start -trace enable=vm_state_notify \
  -msg timestamp=on -D "$dir/$name-$(date +%s%N).log"
