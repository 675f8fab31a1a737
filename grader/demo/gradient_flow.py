from grader import hookimpl


@hookimpl
def state_jacobian(h_next, W_hh):
    # row j of the Jacobian is (1 - h_next[j]^2) times column j of W_hh
    return (1 - h_next ** 2).unsqueeze(1) * W_hh.T
