package plugin

import "github.com/nri-volumes/nri-volumes/volumes"

// Store returns the volume store in use; a Configure with another root
// replaces it, so callers ask again rather than keep it.
func (p *Plugin) Store() *volumes.Store {
	_, store, _ := p.state()
	return store
}
