/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * What this build is: the version /healthz, pyrelayctl and -V report, and
 * the message version its processes speak (msg.h).  One object, so that
 * the test builds of `make check` (tests/pyrelayd-next and
 * tests/pyrelayd-relay-next, compiled with -DPYRELAYD_NEXT) are the same
 * program as the daemon but for these two values: they stand for the next
 * release in tests/integration/test_upgrade.py (docs/upgrade.md).
 */
#include "config.h"

#include <stdint.h>

#include "msg.h"
#include "pyrelayd.h"

#ifdef PYRELAYD_NEXT
const char	pyrelayd_version[] = PACKAGE_VERSION "-next";
const uint32_t	msg_version = MSG_VERSION + 1;
#else
const char	pyrelayd_version[] = PACKAGE_VERSION;
const uint32_t	msg_version = MSG_VERSION;
#endif
