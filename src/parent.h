/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef PARENT_H
#define PARENT_H

#include "pyrelayd.h"

struct parent_opts {
	const char	*conffile;
	char		*const *macros;
	int		 nmacros;
	int		 foreground;
	int		 verbose;
	int		 conffile_given;	/* -f used */
};

/* Runs the supervisor with a parsed configuration; never returns. */
void	parent_main(struct config *, const struct parent_opts *)
	    __attribute__((__noreturn__));

#endif
