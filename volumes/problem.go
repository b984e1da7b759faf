package volumes

// Problem is an entry of the store that is not a usable volume. List skips
// such entries and nothing deletes them; Check reports them so a person can.
type Problem struct {
	Namespace string
	Name      string
	Reason    string
}
