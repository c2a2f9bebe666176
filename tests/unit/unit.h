/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The one runner of the unit tests: each tests/unit/test_*.c describes its
 * suites in CUnit's own tables (CU_SuiteInfo, CU_TestInfo) and its main()
 * returns unit_run(suites), so that how a run counts as failed is decided
 * in one place.
 */
#ifndef UNIT_H
#define UNIT_H

#include <CUnit/Basic.h>

/*
 * Registers the suites (a CU_SUITE_INFO_NULL-terminated array), runs them
 * verbosely and returns the exit status: 0 when every assertion, test and
 * suite set-up and tear-down passed, 1 otherwise or when CUnit could not
 * register them.
 */
int	unit_run(CU_SuiteInfo *);

#endif /* UNIT_H */
