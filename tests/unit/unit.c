/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#include "config.h"

#include <stdio.h>

#include <CUnit/Basic.h>

#include "unit.h"

int
unit_run(CU_SuiteInfo *suites)
{
	unsigned int	failed;

	if (CU_initialize_registry() != CUE_SUCCESS ||
	    CU_register_suites(suites) != CUE_SUCCESS) {
		fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
		CU_cleanup_registry();
		return 1;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	/*
	 * A suite whose set-up failed runs none of its tests and fails no
	 * assertion: it has to fail the run too, or a test binary that
	 * cannot set up would pass.
	 */
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
	    CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed != 0;
}
